"""Training the CNN+CAM classifier, AMGAN and its baselines.

- config: AmganConfig and the methods' presets
- checks: the field checks (types and ranges) both configurations share
- batches: the seed's data order, L_p's reference images, the target values
- trainer: AmganTrainer, the D and G updates
- amgan: train_amgan (the loop: prepare, train D, train G, log, sample, save) and export_model
- classifier, classifier_data, classifier_init: train_classifier, its data and initial weights
- loop: what both loops share (claiming and locking the run folder, resume, RNG state, the JSONL
  log, sample grids)
- export: any run -> a model directory
"""
