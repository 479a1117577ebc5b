import torch
from torch import nn

model = nn.Linear(8, 2)
model.eval()
with torch.inference_mode():
    model = torch.compile(model)
batch = torch.randn(4, 8)
print(model(batch))
