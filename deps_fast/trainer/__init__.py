"""Training engine: data on the device, checkpoints, the DεpS/OFA/BigNAS training loop."""
