"""DistProp on ImageNet (AlexNet split after `features`, 9216) with the scalar L1 constraint.

One multiplier per example for the first split (``multipliers="l1"``), as in the paper's
ImageNet experiment. The AlexNet recipe: 90 epochs at batch 256 (about 446k steps on the
99% of the 1.28M training images left after carving 1% for validation), every learning
rate /10 every 30 epochs (``lr_schedule``), random 224 crops of the image resized to
256 on its short side with horizontal flips (``data.augment="crop_flip"``), decoded and
augmented by grain worker processes (``data.pipeline="grain"``). The paper reports its
figure after 50k iterations: ``--config.num_steps=50000``. Dropout 0.5 before the two
4096-unit layers, as torchvision's AlexNet has it (``network.dropout``; in DistProp they
sit in the last block, which trains on the Gaussians' samples; a key per seed, step and
block, so both extragradient half-steps drop the same units and a resumed run continues
exactly).

Needs ImageNet prepared for tensorflow-datasets (manual download):
  tfds build imagenet2012 --file_format=array_record --data_dir=/data/tfds
Run (one host, all local accelerators on the data axis):
  python -m experiments.main --config=configs/imagenet_distprop.py --workdir=runs/in_dp \
      --config.data.data_dir=/data/tfds
Several hosts (every host runs the same command; BUILD.md, "Multi-host"):
  python -m experiments.main --config=configs/imagenet_distprop.py --workdir=gs://.../in_dp \
      --config.data.data_dir=/data/tfds --distributed
"""

from configs import base


def get_config():
  config = base.get_config()
  config.method = "distprop"  # without configs/default.py's clip: measured on the MNIST CNN only
  config.data.name = "tfds:imagenet2012"
  config.data.image_size = 224
  config.data.validation_fraction = 0.01
  config.data.pipeline = "grain"
  config.network.dropout = 0.5
  config.data.workers = -1  # per host: sized to its CPUs (pipeline.host_workers)
  config.data.prefetch = 2
  config.data.augment = "crop_flip"
  config.network.name = "alexnet"
  config.distprop.multipliers = "l1"
  config.distprop.samples_per_class = 1  # 1000 classes: N = 1 is enough (paper, Sec. 3)
  config.distprop.init_examples = 20_000
  config.lr_schedule.kind = "step"
  config.lr_schedule.every_epochs = 30.0
  config.lr_schedule.factor = 0.1
  # The global batch, all hosts' devices together (or per_device_batch_size, with
  # batch_size=0: the global batch is it x the mesh's data axis). Every learning rate here
  # is for 256. A rule of thumb for another global batch B, not applied automatically:
  # scale the learning rates linearly, lr x B / 256 (Goyal et al. 2017, with a warm-up at
  # large B); num_steps, given in steps, covers 90 epochs at 256 only: scale it by 256 / B.
  config.batch_size = 256
  config.num_steps = 446_000  # 90 epochs of 1,268,355 images at batch 256
  config.log_every = 100
  config.eval_every = 5000
  config.checkpoint_every = 1000
  config.eval_batch_size = 250
  config.eval_train_examples = 10_000
  return config
