import torch
from torch import nn

model = nn.Linear(8, 2).cuda()
optimizer = torch.optim.AdamW(model.parameters())
inputs = torch.randn(64, 8, device="cuda")
for _ in range(100):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(inputs).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
