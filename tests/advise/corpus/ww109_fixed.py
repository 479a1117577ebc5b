import torch
from torch import nn

model = nn.Linear(8, 2)
model.eval()
compiled = torch.compile(model)
batches = torch.randn(100, 32, 8)
with torch.inference_mode():
    for batch in batches:
        compiled(batch)
