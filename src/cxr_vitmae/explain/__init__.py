"""The paper's discussion as tools: MAE reconstructions (and, later, Grad-CAM)."""
