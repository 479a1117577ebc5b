import torch
from torch.utils.data import DataLoader, TensorDataset

dataset = TensorDataset(torch.randn(256, 8))
loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2)
