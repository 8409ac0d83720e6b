"""The paper's metrics and the synthetic-truth ones, as pure functions: retrieval (top-k and edit
classification accuracy), edits (edit quality against the renderer), cam (CAM IoU)."""
