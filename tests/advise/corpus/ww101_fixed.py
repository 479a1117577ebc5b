import torch
from torch import nn

model = nn.Linear(8, 2)
model.eval()
batch = torch.randn(4, 8)
with torch.inference_mode():
    print(model(batch))
