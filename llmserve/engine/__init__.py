"""The model on its device: the only torch code. Loading, device and dtype, the scheduler, sampling, backends."""
