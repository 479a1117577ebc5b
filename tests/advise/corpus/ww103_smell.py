import torch
from torch import nn

model = nn.Linear(8, 2)
model.eval()
model = torch.compile(model)
dataset = torch.randn(100, 8)
with torch.inference_mode():
    outputs = [model(sample.unsqueeze(0)) for sample in dataset]
    for sample in dataset:
        outputs.append(model(sample[None]))
