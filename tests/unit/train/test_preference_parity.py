"""Each preference loss equals TRL's implementation on the same batch and tiny model, to 1e-5.

TRL's trainers are built without their __init__ (which wants datasets and a training
setup) and given only the attributes their loss code reads; their log-probs come from
their own fused LM head (DPO, KTO) or `get_batch_logps` over full logits (ORPO, SimPO),
ours from tunelab's chunked head, so the comparison covers log-prob sums and loss maths.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import torch

pytest.importorskip("trl", reason="TRL is the reference implementation: pip install trl")

from tunelab.data.tokenize import PreferenceExample  # noqa: E402
from tunelab.train import preference as pl  # noqa: E402
from tunelab.train.pairs import collate_preference, sequence_logps  # noqa: E402
from tunelab.train.reward import reward_scores  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
PAD = 0


def _examples(n: int = 3, sides: int = 2, seed: int = 0) -> list[PreferenceExample]:
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(5, 500) for _ in range(k)]  # noqa: E731 (never the pad id)
    return [PreferenceExample(ids(rng.randint(3, 9)), [ids(rng.randint(2, 8)) for _ in range(sides)],
                              label=(i % 2 == 0) if sides == 1 else None) for i in range(n)]


def _trl_rows(prompts, completions) -> dict:
    """TRL's layout of the same rows: input_ids, attention_mask, completion_mask (R, T)."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids, attn, comp = [], [], []
    for p, c in zip(prompts, completions):
        pad = width - len(p) - len(c)
        ids.append(p + c + [PAD] * pad)
        attn.append([1] * (len(p) + len(c)) + [0] * pad)
        comp.append([0] * len(p) + [1] * len(c) + [0] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(attn), "completion_mask": torch.tensor(comp)}


def _pair_rows(examples):
    prompts = [ex.prompt_ids for k in range(2) for ex in examples]
    return _trl_rows(prompts, [ex.completions[k] for k in range(2) for ex in examples])


@pytest.fixture(scope="module")
def models(tiny_models):
    from transformers import AutoModelForCausalLM

    from tiny_models import build_tiny_model

    ref_dir = build_tiny_model("llama", tiny_models["llama"].parent / "llama-ref", seed=1)
    policy = AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval()
    ref = AutoModelForCausalLM.from_pretrained(ref_dir).eval()
    return policy, ref


def _ours(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return sequence_logps(model, batch["input_ids"], batch["labels"], batch["position_ids"])


def _bare(cls, model, **attrs):
    """A TRL trainer holding only what its loss code reads."""
    from accelerate import Accelerator

    trainer = cls.__new__(cls)
    trainer.__dict__.update(accelerator=Accelerator(cpu=True), model=model, aux_loss_enabled=False,
                            _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                            _total_train_tokens=0, _tp_size=1, **attrs)
    return trainer


def _logged(trainer) -> dict:
    """What the TRL trainer logged (under 'eval': the models are in eval mode)."""
    return trainer._metrics["train"] or trainer._metrics["eval"]


def _fused(model):
    import copy

    from trl.trainer.utils import add_fused_lm_head

    model = copy.deepcopy(model)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    return model


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_matches_trl(loss_type, models):
    from trl.trainer.dpo_trainer import DPOTrainer

    policy, ref = models
    examples = _examples()
    ours = collate_preference(range(3), examples, PAD)
    logps, lens = _ours(policy, ours)
    ref_logps, _ = _ours(ref, ours)
    mine = pl.dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=0.3, loss_type=loss_type,
                       chosen_lens=lens.chunk(2)[0].float(), rejected_lens=lens.chunk(2)[1].float())
    model = _fused(policy)
    trl = _bare(DPOTrainer, model, beta=0.3, loss_types=[loss_type], loss_weights=[1.0], ld_alpha=None,
                f_divergence_type="reverse_kl", precompute_ref_logps=True, use_weighting=False, label_smoothing=0.0)
    rc, rr = ref_logps.chunk(2)
    with torch.no_grad():
        loss = trl.compute_loss(model, {**_pair_rows(examples), "ref_chosen_logps": rc, "ref_rejected_logps": rr})
    torch.testing.assert_close(mine.losses.mean(), loss, **TOL)
    metrics = _logged(trl)
    assert mine.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][0], abs=1e-5)
    assert mine.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"][0], abs=1e-5)
    accuracy = (mine.chosen_rewards > mine.rejected_rewards).float().mean().item()
    assert accuracy == pytest.approx(metrics["rewards/accuracies"][0])


def test_dpo_label_smoothing_is_trls_conservative_sigmoid():
    """cDPO: TRL (1.x) keeps the label-smoothed sigmoid in CPOTrainer's 'sigmoid' loss."""
    from trl.experimental.cpo import CPOTrainer

    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=gen) * 4 - 20 for _ in range(4))
    mine = pl.dpo_loss(pc, pr, rc, rr, beta=0.2, label_smoothing=0.15)
    trl = _bare(CPOTrainer, None, loss_type="sigmoid", beta=0.2, label_smoothing=0.15, alpha=0.0)
    losses, _, _ = trl.cpo_loss(pc - rc, pr - rr)  # CPO's logits are the difference: pass the log-ratios
    torch.testing.assert_close(mine.losses, losses, **TOL)


def test_kto_matches_trl(models):
    from trl.trainer.kto_trainer import KTOTrainer

    policy, ref = models
    examples = _examples(n=4, sides=1)
    ours = collate_preference(range(4), examples, PAD)
    logps, _ = _ours(policy, ours)
    ref_logps, _ = _ours(ref, ours)
    kl_batch = {k[3:]: v for k, v in ours.items() if k.startswith("kl_")}
    kl = pl.kto_kl(_ours(policy, kl_batch)[0], _ours(ref, kl_batch)[0])
    mine = pl.kto_loss(logps, ref_logps, ours["desirable"], kl, beta=0.2, desirable_weight=1.3, undesirable_weight=0.7)
    main = _trl_rows([e.prompt_ids for e in examples], [e.completions[0] for e in examples])
    other = _trl_rows([e.prompt_ids for e in examples], [examples[(i + 1) % 4].completions[0] for i in range(4)])
    inputs = {**main, **{f"KL_{k}": v for k, v in other.items()}, "label": ours["desirable"],
              "ref_logps": ref_logps, "ref_KL_logps": _ours(ref, kl_batch)[0]}
    model = _fused(policy)
    trl = _bare(KTOTrainer, model, beta=0.2, loss_type="kto", calculate_KL=True, precompute_ref_logps=True,
                desirable_weight=1.3, undesirable_weight=0.7)
    with torch.no_grad():
        loss = trl.compute_loss(model, inputs)
    torch.testing.assert_close(mine.losses.mean(), loss, **TOL)
    assert float(kl) == pytest.approx(_logged(trl)["kl"][0], abs=1e-5)
    assert mine.chosen_rewards.mean().item() == pytest.approx(_logged(trl)["rewards/chosen"][0], abs=1e-5)


def _trl_avg_logps(trainer, model, examples):
    """TRL's per-token mean log-probs of chosen and rejected from full logits."""
    rows = _pair_rows(examples)
    labels = rows["input_ids"].masked_fill(rows["completion_mask"] == 0, -100)
    with torch.no_grad():
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    return trainer.get_batch_logps(logits, labels, average_log_prob=True).chunk(2)


def test_orpo_matches_trl(models):
    from trl.experimental.orpo import ORPOTrainer

    policy, _ = models
    examples = _examples(seed=3)
    logps, lens = _ours(policy, collate_preference(range(3), examples, PAD))
    mine = pl.orpo_loss(*logps.chunk(2), *lens.float().chunk(2), beta=0.25)
    trl = _bare(ORPOTrainer, policy, beta=0.25, is_encoder_decoder=False, label_pad_token_id=-100)
    avg_c, avg_r = _trl_avg_logps(trl, policy, examples)
    losses, chosen_rewards, rejected_rewards, _, _ = trl.odds_ratio_loss(avg_c, avg_r)
    # TRL's loss = nll - mean(odds-ratio term); its nll here is the chosen reply's mean NLL (see orpo_loss)
    torch.testing.assert_close(mine.losses.mean(), (-avg_c).mean() - losses.mean(), **TOL)
    torch.testing.assert_close(mine.chosen_rewards, chosen_rewards, **TOL)
    torch.testing.assert_close(mine.rejected_rewards, rejected_rewards, **TOL)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl(label_smoothing, models):
    from trl.experimental.cpo import CPOTrainer

    policy, _ = models
    examples = _examples(seed=5)
    logps, lens = _ours(policy, collate_preference(range(3), examples, PAD))
    mine = pl.simpo_loss(*logps.chunk(2), *lens.float().chunk(2), beta=2.0, gamma=0.7, label_smoothing=label_smoothing)
    trl = _bare(CPOTrainer, policy, loss_type="simpo", beta=2.0, simpo_gamma=0.7, label_smoothing=label_smoothing,
                alpha=0.0, is_encoder_decoder=False, label_pad_token_id=-100)
    losses, chosen_rewards, _ = trl.cpo_loss(*_trl_avg_logps(trl, policy, examples))
    torch.testing.assert_close(mine.losses, losses, **TOL)
    torch.testing.assert_close(mine.chosen_rewards, chosen_rewards, **TOL)


@pytest.mark.parametrize("center", [None, 0.01])
def test_reward_model_loss_matches_trl(center, tiny_models):
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import RewardTrainer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["llama"], num_labels=1).eval()
    model.config.pad_token_id = PAD
    examples = _examples(seed=7)
    rows, ours = _pair_rows(examples), collate_preference(range(3), examples, PAD)
    with torch.no_grad():  # tunelab's scores: the head at the last real token found from the labels
        scores = reward_scores(model, ours["input_ids"], ours["labels"], ours["position_ids"])
    mine = pl.bradley_terry_loss(*scores.chunk(2), center_coef=center)
    args = type("Args", (), {"center_rewards_coefficient": center})()
    trl = _bare(RewardTrainer, model, args=args)
    with torch.no_grad():
        loss = trl.compute_loss(model, {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]})
    torch.testing.assert_close(mine.losses.mean(), loss, **TOL)
    accuracy = (mine.chosen_rewards > mine.rejected_rewards).float().mean().item()
    assert accuracy == pytest.approx(_logged(trl)["accuracy"][0])
