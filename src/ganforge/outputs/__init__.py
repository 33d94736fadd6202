"""Using a trained model: sample, interpolate, compare, report, serve and export a run's generator.

Each module is a library the `ganforge` commands of the same name call; none imports the CLI, and
the heavy optional packages (Gradio, ONNX, onnxruntime) are imported only inside the functions that
need them, so `import ganforge` stays light.

- `model`: load a run's generator (the EMA one when there is one), seeded latents, batched generation.
- `files`: atomic outputs (temporary name, then rename) and the checks before writing.
- `sampling`: N images to a folder of PNGs (+ labels.csv) or one streamed `.npz`.
- `interpolate`: spherical interpolation walks (Shoemake 1985; White 2016 for GAN latents).
- `animation`: grids and GIFs, including the run's `samples/progress.gif`.
- `runs`: what a run folder says about itself (config, history, eval.json), read without a network.
- `compare`, `report`: several runs in one table; one run on one self-contained HTML page.
- `export`: the generator as ONNX or TorchScript, checked against PyTorch.
- `webapp`: the Gradio page behind `ganforge serve`.
"""
