import torch
from torch import nn

model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 2))
model.eval()


@torch.inference_mode()
def predict(batch: torch.Tensor) -> torch.Tensor:
    return model(batch)
