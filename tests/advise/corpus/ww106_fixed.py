import torch
from torch.utils.data import DataLoader, TensorDataset

device = torch.device("cuda")
dataset = TensorDataset(torch.randn(256, 8))
loader = DataLoader(dataset, batch_size=32, num_workers=2, pin_memory=True)
batches = [batch.to(device, non_blocking=True) for (batch,) in loader]
