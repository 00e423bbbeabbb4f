"""How train.py runs on hardware: the device, precision, attention kernel and compile choices
(runtime), data parallelism and FSDP2 sharding (parallel), checkpoints and the export
(checkpoint), and the per-stage memory plan (plan)."""
