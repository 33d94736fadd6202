"""audit.png: the figure of `ganforge audit`.

One row per feature space: the generated images closest to a training image (top strip) above
their nearest training images (bottom strip), and the distribution of each sample's distance to
its nearest training image divided by that image's own nearest-neighbour distance (the ratio the
authenticity test of Alaa et al. 2022 compares with 1), generated beside the real baseline. A
last row compares the class histograms when the dataset has a shipped classifier.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganforge import fsutil


def _strip(images: torch.Tensor) -> torch.Tensor:
    """uint8 [P, C, H, W] -> float [H, P*(W+2), 3] in 0..1 with a 2-pixel white gap."""
    x = images.float() / 255.0
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = torch.nn.functional.pad(x, (1, 1, 0, 0), value=1.0)
    return x.permute(2, 0, 3, 1).reshape(x.shape[2], -1, 3)


def plot_audit(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = result.record
    spaces = list(result.pairs)
    rows = len(spaces) + (result.histograms is not None)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.8 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6, 1]})
    proto = rec["protocol"]
    fig.suptitle(f"ganforge audit: {proto.get('run_dir', proto['dataset'])}  N={proto['n_generated']}, "
                 f"baseline: {proto['reference_split']} split, seed {proto['seed']}", fontsize=10)
    for row, name in enumerate(spaces):
        fake, near, dist = result.pairs[name]
        grid = torch.cat([_strip(fake), torch.ones(2, _strip(fake).shape[1], 3), _strip(near)])
        ax = axes[row][0]
        ax.imshow(grid.numpy(), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{name}: closest generated (top) and nearest training image (bottom); "
                     f"d = {', '.join(f'{float(d):.2g}' for d in dist[:4])}...", fontsize=8)
        ratio_fake, ratio_real = result.nn_distances[name]
        ax = axes[row][1]
        # Bins up to the 99th percentile (and at least past 1, the authenticity threshold): a few
        # outliers far from every training image would otherwise squeeze the histogram to one bar.
        top = float(torch.quantile(torch.cat([ratio_fake, ratio_real]).float(), 0.99)) or 1.0
        bins = torch.linspace(0, max(top, 1.5), 40).numpy()
        m = rec["memorisation"][name]
        ax.hist(ratio_real.clamp(max=bins[-1]).numpy(), bins=bins, alpha=0.5,
                label=f"real {proto['reference_split']} (authentic {m['real_baseline']['authenticity']:.2f})")
        ax.hist(ratio_fake.clamp(max=bins[-1]).numpy(), bins=bins, alpha=0.5,
                label=f"generated (authentic {m['generated']['authenticity']:.2f})")
        ax.axvline(1.0, color="k", lw=0.8)  # left of it: inauthentic (Alaa et al. 2022's test)
        ax.set_xlabel("d(sample, nearest train) / d(that train image, its nearest train)", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    if result.histograms is not None:
        hg, hr = result.histograms
        ax = axes[-1][0]
        k = torch.arange(len(hg)).numpy()
        ax.bar(k - 0.2, hr.numpy(), width=0.4, label=f"real {proto['reference_split']}")
        ax.bar(k + 0.2, hg.numpy(), width=0.4, label="generated")
        ax.set_xticks(k)
        tv = rec["coverage"]["class_histogram"]["total_variation"]
        ax.set_title(f"class shares (shipped classifier's predictions), total variation {tv:.3f}", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        axes[-1][1].set_axis_off()
        text = "\n".join(f"{s}: {v}" for s, v in rec["verdict"].items())
        axes[-1][1].text(0, 1, text, va="top", fontsize=7, wrap=True)
    fig.tight_layout()
    try:
        with fsutil.atomic_file(Path(path)) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
