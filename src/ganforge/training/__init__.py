"""Training a GAN: everything that runs inside `ganforge train`, apart from the infrastructure
(config, runtime, precision, data, models) that the other commands share.

The loop reads top to bottom in `loop.Trainer`; around it:
  setup          how a run's parts (device, data, models, optimizers, compiled modules) come from its config
  objective      one step's losses for D and G: the loss of `losses`, its penalties, augmentation, precision
  losses         the registry of GAN objectives (BCE, hinge, WGAN-GP, relativistic) and the R1/R2 penalties
  augment        DiffAugment operations (Zhao et al. 2020), applied to real and generated images alike
  optim          optimizers and the learning rate as a pure function of progress
  ema            the generator's exponential moving average, its half-life in images (Karras et al. 2019)
  gradsync       the bucketed, overlapped all-reduce of gradients under torchrun
  health         the guard that rolls a diverged run back to its last good state
  window         the log window: step values summed on the device, averaged across ranks at its end
  periodic_eval  FID (or the classifier FID) every few thousand images, the best checkpoint kept
  artifacts      fixed-latent grids, loss curves and the run folder
  state          the full training state (progress in images, modules, optimizers, RNG): save and restore
  checkpoint     checkpoint files, written atomically and verified; pack and unpack mirror each other
  resume         what may change on a resume and what may not
  capacity       the memory a run will need, estimated on the meta device before anything is allocated
  privacy        DP-SGD on D with Opacus (Abadi et al. 2016): per-sample clipping of the real images' term, the
                 ledger (epsilon spent) in every checkpoint, the budget stop, the refusals, `summary` for other commands
  dsteps         D steps per G step: constant, or Bie et al.'s (2023) adaptive schedule
  progress       a tqdm bar per epoch on a terminal, plain log lines in files and CI
"""
