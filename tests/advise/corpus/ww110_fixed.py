import torch
from torch import nn

backbone = nn.Sequential(nn.Linear(8, 64), nn.ReLU())
backbone.requires_grad_(False)
head = nn.Linear(64, 2)
optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
inputs = torch.randn(64, 8)
for _ in range(100):
    features = backbone(inputs)
    loss = head(features).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
