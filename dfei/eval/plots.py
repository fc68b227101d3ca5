"""The comparison report's figures (matplotlib, Agg backend, PNG written atomically): valid AUC and
train loss curves, the ablation bars (paper Fig. 2a), a t-SNE of the domain features (Fig. 4)."""
from __future__ import annotations

import os

import numpy as np

from dfei.atomic import atomic_write
from dfei.eval.significance import finite_mean


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> str:
    """Lay out, write atomically as PNG (120 dpi), close; returns `path`."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    pyplot().close(fig)
    return path


def ablation_plot(values: dict[str, dict[str, list[float]]], domains: list[str], out: str) -> str | None:
    variants = [("dfei", "DFEI"), ("dfei_wo_dfi", "w/o DFI"), ("dfei_wo_dfei", "w/o DFEI"),
                ("dfei_no_lr_scale", "w/o lr/D")]
    present = [(m, label) for m, label in variants if m in values]
    if len(present) < 2:
        return None
    plt = pyplot()
    cols = domains + ["avg"]
    x = np.arange(len(cols))
    width = 0.8 / len(present)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols)), 4))
    for i, (m, label) in enumerate(present):
        ax.bar(x + i * width, [finite_mean(values[m][c]) for c in cols], width, label=label)
    ax.set_xticks(x + width * (len(present) - 1) / 2, cols)
    lo = min(finite_mean(values[m][c]) for m, _ in present for c in cols)
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_ylabel("test AUC")
    ax.set_title("Ablation of the DFEI modules (paper Fig. 2a)")
    ax.legend()
    return save_figure(fig, os.path.join(out, "ablation.png"))


def curves_plot(facts: dict[str, dict[str, list]], out: str) -> str | None:
    """curves.png: valid avg AUC and train loss per epoch; one colour per model, one line per seed."""
    if not facts:
        return None
    plt = pyplot()
    fig, (ax_auc, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.get_cmap("tab20")
    for i, (m, f) in enumerate(facts.items()):
        colour = colours(i % 20)
        for j, (auc_curve, loss_curve) in enumerate(zip(f["curve_valid_auc"], f["curve_train_loss"])):
            epochs = np.arange(1, len(auc_curve) + 1)
            label = m if j == 0 else None
            ax_auc.plot(epochs, auc_curve, color=colour, lw=1, alpha=0.8, label=label)
            ax_loss.plot(epochs, loss_curve, color=colour, lw=1, alpha=0.8, label=label)
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("valid avg AUC")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss (with dropout)")
    ax_auc.set_title("Learning curves: valid avg AUC")
    ax_loss.set_title("Train loss")
    ax_loss.legend(fontsize=7, ncol=2)
    return save_figure(fig, os.path.join(out, "curves.png"))


def tsne_plot(v: np.ndarray, names: list[str], ctr: list[float], out: str, seed: int = 0) -> str | None:
    """Fig. 4: the final domain features, labelled, coloured by CTR below/above the median.
    None (no figure) for fewer than 2 domains: t-SNE needs more points than its perplexity (>= 1)."""
    if len(v) < 2:
        return None
    from sklearn.manifold import TSNE

    plt = pyplot()

    perplexity = float(max(1, min(5, len(v) - 1)))
    xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="random").fit_transform(v)
    high = np.asarray(ctr) > np.median(ctr)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[~high, 0], xy[~high, 1], c="tab:blue", label="CTR <= median")
    ax.scatter(xy[high, 0], xy[high, 1], c="tab:red", label="CTR > median")
    for (px, py), name in zip(xy, names):
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(4, 4))
    ax.set_title("t-SNE of the final domain features v_d (paper Fig. 4)")
    ax.legend()
    return save_figure(fig, os.path.join(out, "domain_features_tsne.png"))
