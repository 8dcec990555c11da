"""The paper's numbers, to set beside ours: linear-probe top-1 (%) on CIFAR-10 (Tables 1-3) and CIFAR-100 (Figure 4).

Sources: the authors' README (github.com/yangyu12/squeeze-and-span, the NeurIPS 2022 version)
and the submission's text, which agree on every CIFAR number; Figure 4's points are those of
the authors' ``paper_plots/acc_vs_fid.py``. The paper reports one run per row (no seeds).
Keys are a sweep plan's entry names (``results/fashion_mnist/plan.yaml``).
"""

from __future__ import annotations

CIFAR10_TOP1: dict[str, float] = {
    # Table 1: representation transfer from different teachers
    "d_single": 63.81,
    "d_multi": 77.58,
    "encode_syn": 57.15,
    "encode_syn_real": 50.27,
    "w_vanilla": 84.84,
    "w_squeeze": 86.99,
    "w_squeeze_span": 90.95,
    "g_vanilla": 84.48,  # also Table 3 row b
    "squeeze": 87.67,  # generator features; also Table 2 and Table 3 row e
    "squeeze_span": 92.54,  # also Table 2 and Table 3 row f
    # Table 2: comparison with SSL on the same data
    "simsiam_real": 90.94,
    "vicreg_real": 89.20,
    "simsiam_syn": 85.11,
    "vicreg_syn": 84.68,
    "simsiam_mix": 90.88,
    "vicreg_mix": 90.46,
    # Table 3: ablations
    "kd": 74.20,  # row a: L_RD only
    "kd_squeeze_novar_nocov": 10.00,  # row c: T_phi without L_var, L_cov: collapse
    "kd_squeeze_nocov": 79.10,  # row d: + L_var
}

# Figure 4 (CIFAR-100): (FID of the generator snapshot, top-1 of its Squeeze and Span student).
CIFAR100_FIGURE4 = [
    (87.51, 62.08),
    (50.21, 60.52),
    (41.71, 62.18),
    (20.78, 62.91),
    (11.03, 64.65),
    (7.09, 66.56),
    (5.22, 66.68),
    (4.43, 67.63),
    (4.13, 67.86),
]
CIFAR100_VICREG_REAL = 63.31
CIFAR100_VICREG_MIX = 65.22
