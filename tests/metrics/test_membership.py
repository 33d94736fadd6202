"""Membership inference (`metrics.membership`): the formulas against closed-form cases, the attacks
against models built to leak membership and models that never saw the members, and `ganforge audit`
end to end with and without a reference run."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli, shared_path
from ganforge.data import load_dataset
from ganforge.data.base import ImageData
from ganforge.metrics import membership as M
from ganforge.models.mlp import FCDiscriminator

# --- the formulas ----------------------------------------------------------------------------------


def test_auc_of_perfectly_separated_scores_is_one_and_of_reversed_ones_zero():
    members, nonmembers = torch.arange(10.0) + 10, torch.arange(10.0)
    assert M.roc_auc(members, nonmembers) == 1.0
    assert M.roc_auc(nonmembers, members) == 0.0
    assert M.tpr_at_fpr(members, nonmembers) == 1.0


def test_auc_counts_pairs_and_half_ties():
    # pairs (member, non-member): 3>2, 3>0, 1<2, 1>0 -> 3 of 4
    assert M.roc_auc(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0])) == 0.75
    # one tie of four pairs counts one half: 3>1, 3>0, 1=1, 1>0 -> 3.5 of 4
    assert M.roc_auc(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.0])) == 0.875
    assert M.roc_auc(torch.ones(5), torch.ones(7)) == 0.5


def test_auc_of_identical_distributions_is_a_half_within_its_null_spread():
    g = torch.Generator().manual_seed(0)
    n = 2000
    auc = M.roc_auc(torch.randn(n, generator=g), torch.randn(n, generator=g))
    sd = M.null_auc_sd(n, n)
    assert 0.00912 < sd < 0.00914     # sqrt(4001 / (12 * 2000 * 2000))
    assert abs(auc - 0.5) < 4 * sd


def test_null_auc_spread_matches_permutations():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(40, generator=g)
    aucs = torch.tensor([M.roc_auc(*scores[torch.randperm(40, generator=g)].split(20)) for _ in range(400)])
    # the spread of 400 null AUCs is within 15% of the closed form (its own sampling error is ~3.5%)
    assert abs(float(aucs.std()) / M.null_auc_sd(20, 20) - 1) < 0.15


def test_tpr_at_one_percent_fpr_on_a_constructed_case():
    nonmembers = torch.arange(200.0)                       # 0..199
    members = torch.cat([torch.full((50,), 1000.0),        # above every non-member
                         torch.full((50,), 198.5),         # above all but one (199)
                         torch.full((25,), 197.5),         # above all but two (198, 199)
                         torch.full((75,), -1.0)])         # below all
    # FPR <= 1% allows 2 of 200 non-members at or above the threshold: t = 197.5 keeps 125 of 200 members
    assert M.tpr_at_fpr(members, nonmembers, 0.01) == 0.625
    # one allowed: t = 198.5 keeps 100; none: t = 1000 keeps 50; three: t = 197 adds no member
    assert M.tpr_at_fpr(members, nonmembers, 0.005) == 0.5
    assert M.tpr_at_fpr(members, nonmembers, 0.0) == 0.25
    assert M.tpr_at_fpr(members, nonmembers, 0.015) == 0.625
    assert M.tpr_at_fpr(members, nonmembers, 1.0) == 1.0


# --- models built to leak, and models that never saw the members -------------------------------------

@pytest.fixture(scope="module")
def pools():
    """Disjoint sets of mnist-5k digits drawn at random: five of 200, and 2,000 negatives."""
    data = load_dataset(name="mnist-5k", cache=False)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    parts = [order[i * 200: (i + 1) * 200] for i in range(5)] + [order[1000:3000]]
    return [ImageData(images=data.images[p], labels=data.labels[p], class_names=data.class_names) for p in parts]


def memorising_d(positives: ImageData, negatives: ImageData, steps: int = 120) -> torch.nn.Module:
    """A fully connected discriminator (784-256-128-64-1) trained to give 200 `positives` high logits
    and 2,000 other digits low ones (the positives weighted up to balance): with ten times as many
    negatives it cannot call "a digit" positive, only those 200 images."""
    torch.manual_seed(0)
    d = FCDiscriminator(channels=1, size=28, width=16)
    x = torch.cat([positives.images, negatives.images]).float() * (2 / 255) - 1
    y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])
    weight = torch.where(y > 0, len(negatives) / len(positives), 1.0)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(d(x), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return d.eval()


def noisy(images: torch.Tensor, noise: int, gen: torch.Generator) -> torch.Tensor:
    """Each pixel shifted by up to `noise` grey levels."""
    return (images.short() + torch.randint(-noise, noise + 1, images.shape, generator=gen)).clamp(0, 255).byte()


def drawing(data: ImageData):
    """A 'generator' returning random images of `data`."""
    return lambda b, gen: (data.images[torch.randint(0, len(data), (b,), generator=gen)], None)


@pytest.fixture(scope="module")
def attacked(pools):
    torch.set_num_threads(2)
    members, nonmembers, ref_members, others, _, negatives = pools
    gen = torch.Generator().manual_seed(1)
    leaky = M.Attacked("leaky", memorising_d(members, negatives))
    unseen = M.Attacked("unseen", memorising_d(ref_members, negatives), drawing(others))
    setup = M.Setup(target=leaky, members=members, nonmembers=nonmembers, reference=unseen)
    # the target's N = 400 generated images: noisy copies of every member and of 200 other digits
    generated = torch.cat([noisy(members.images, 8, gen), noisy(others.images, 8, gen)])
    return M.attack(setup, generated=generated, seed=0)


def test_both_attacks_find_the_members_of_a_leaking_model(attacked):
    assert attacked["n_members"] == attacked["n_nonmembers"] == 200 and attacked["n_generated"] == 400
    for name in M.ATTACKS:
        e = attacked[name]
        assert e["auc"] > 0.95 and e["tpr_at_1pct_fpr"] > 0.5 and e["leaks"], (name, e)
    assert "MEMBERS DISTINGUISHABLE" in M.verdict(attacked)


def test_a_model_that_never_saw_the_members_scores_like_chance(attacked):
    # 200 vs 200 scores without signal: AUC sd sqrt(401 / (12 * 200 * 200)) = 0.029; 4 sd = 0.116
    assert abs(attacked["null_auc_sd"] - 0.0289) < 1e-4
    for name in M.ATTACKS:
        ref = attacked[name]["reference"]
        assert abs(ref["auc"] - 0.5) < 4 * attacked["null_auc_sd"], (name, ref)
        assert ref["tpr_at_1pct_fpr"] < 0.1


def test_without_a_reference_the_baseline_is_chance(pools):
    members, nonmembers, _, others, *_ = pools
    setup = M.Setup(target=M.Attacked("t", None, no_discriminator="no D here"), members=members,
                    nonmembers=nonmembers)
    rec = M.attack(setup, generated=others.images, seed=0)
    assert rec["discriminator"] == {"paper": M.ATTACKS["discriminator"], "not_applicable": "no D here"}
    chance = rec["generated_distance"]["chance"]
    assert chance["auc"] == 0.5 and chance["tpr_at_1pct_fpr"] == 0.01
    assert not rec["generated_distance"]["leaks"]


def test_no_nonmembers_is_refused_in_the_record(pools):
    setup = M.Setup(target=M.Attacked("t", None), members=pools[0], nonmembers=None,
                    refused="mnist-5k has no held-out split")
    rec = M.attack(setup, generated=pools[1].images)
    assert rec["not_applicable"] == "mnist-5k has no held-out split"
    assert M.verdict(rec) == "not applicable: mnist-5k has no held-out split"


def test_unseen_drops_images_by_content_not_index(pools):
    a, b = pools[0], pools[1]
    mixed = ImageData(images=torch.cat([b.images[:5], a.images]), labels=torch.cat([b.labels[:5], a.labels]))
    left = M.unseen(mixed, M.image_keys(b.images))
    assert torch.equal(left.images, a.images) and torch.equal(left.labels, a.labels)


def test_privacy_fields_come_from_the_run_s_privacy_record(tmp_path):
    import json

    assert M.privacy_of(tmp_path)["private"] is False  # no privacy.json: not a private run
    (tmp_path / "privacy.json").write_text(json.dumps({"epsilon": 7.3, "epsilon_budget": 10.0, "delta": 1e-5,
                                                       "accountant": "rdp", "noise_multiplier": 0.53, "steps": 5550}))
    rec = M.privacy_of(tmp_path)
    assert rec["private"] is True and rec["epsilon"] == 7.3 and rec["epsilon_budget"] == 10.0
    assert rec["accountant"] == "rdp" and rec["steps"] == 5550


# --- `ganforge audit` end to end --------------------------------------------------------------------

TINY = ["--batch-size", "32", "--max-steps", "1", "--set", "data.limit=64", "--set", "model.g_channels=8",
        "--set", "model.d_channels=8", "--set", "model.conditional=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run on the first 64 MNIST training digits, and a reference on the first 64 test digits."""
    root = shared_path("mnist")
    out = tmp_path_factory.mktemp("runs")
    for name, extra in (("u", []), ("ref", ["--set", "data.split=test"])):
        assert run_cli(["train", "--preset", "mnist-cgan", "--data-dir", str(root), "--out", str(out),
                        "--name", name, *TINY, *extra]) == 0
    return out


def test_audit_reports_membership_beside_a_reference_run(runs, tmp_path, capsys):
    assert run_cli(["audit", str(runs / "u"), "--n", "32", "--spaces", "pixels", "--device", "cpu",
                    "--membership-n", "40", "--reference-run", str(runs / "ref"), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "membership    40 members vs 40 non-members; discriminator:" in text and "reference run" in text
    m = json.loads((tmp_path / "audit.json").read_text())["membership"]
    assert m["n_members"] == m["n_nonmembers"] == 40 and m["n_generated"] == 32 and m["fpr"] == 0.01
    assert m["members"] == "the run's training images (mnist train, first 64: 64), less those the reference " \
                           "trained on (64 left)"
    # the reference trained on the first 64 test digits: they are no non-members
    assert m["nonmembers"].endswith("less those the reference trained on (9936 left)")
    assert m["reference_run"] == str(runs / "ref") and m["privacy"]["private"] is False
    for name in M.ATTACKS:
        assert 0 <= m[name]["auc"] <= 1 and 0 <= m[name]["reference"]["tpr_at_1pct_fpr"] <= 1


def test_audit_without_reference_compares_with_chance(runs, tmp_path, capsys):
    assert run_cli(["audit", str(runs / "u"), "--n", "32", "--spaces", "pixels", "--device", "cpu",
                    "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "audit.json").read_text())["membership"]
    assert m["n_members"] == 64 and m["reference_run"] is None      # all 64 training digits, 64 test digits
    assert m["discriminator"]["chance"]["auc"] == 0.5 and "pixels scaled to 0..1" in m["generated_distance"]["paper"]


def test_a_reference_that_saw_the_members_is_one_line(runs, tmp_path, capsys):
    assert run_cli(["audit", str(runs / "u"), "--n", "32", "--spaces", "pixels", "--device", "cpu",
                    "--reference-run", str(runs / "u"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leaves 0 training images of the audited run it never saw" in err[0], err
    assert not (tmp_path / "audit.json").exists()
