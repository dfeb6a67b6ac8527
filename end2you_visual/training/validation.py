"""Validation of a training run: predictions on the validation windows,
assembled per sequence, scored with :func:`end2you_visual.scoring.score`
(a part of :class:`~end2you_visual.training.Trainer`).
"""
import numpy as np
import torch

from ..errors import InputError
from ..models.checkpoint import unwrap_model
from ..scoring import score
from . import distributed
from .steps import NonFiniteLossError

__all__ = ['Validation']


class Validation:
    """Validation of :class:`~end2you_visual.training.Trainer` (a mixin):
    predictions on the validation windows, assembled per sequence, and
    their metrics (:func:`end2you_visual.scoring.score`)."""

    @torch.no_grad()
    def predict_valid(self):
        """Outputs on the validation windows, assembled per sequence.

        Returns ``(loss, [(pred (n, L), labels (n, L), keep (n,)) per sequence])``;
        all processes get everything.
        """
        distributed.broadcast_buffers(self.model, self.dist)
        self.eval_net.eval()
        parts, loss_sum, n_seq = [], 0.0, 0
        for batch in self.valid_loader:
            inputs, labels, mask, _ = self._to_device(batch)
            with self.autocast:
                out = self.eval_net(*inputs)
            loss = self.loss_fn(out, labels, mask)
            loss_sum += float(loss) * len(labels)
            n_seq += len(labels)
            parts.append((batch["sequence"].numpy(), batch["start"].numpy(),
                          out.float().cpu().numpy(), labels.float().cpu().numpy(),
                          mask.cpu().numpy()))
        gathered = distributed.gather_objects((parts, loss_sum, n_seq), self.dist)
        loss = sum(g[1] for g in gathered) / max(sum(g[2] for g in gathered), 1)
        seqs = []
        n_out = len(self.label_names)
        for _, info in self.valid_set.sequences:
            seqs.append((np.full((info.length, n_out), np.nan, np.float32),
                         np.zeros((info.length, n_out), np.float32),
                         np.zeros(info.length, bool)))
        for g in gathered:
            for seq_ids, starts, outs, labs, masks in g[0]:
                for q, s, o, lab, m in zip(seq_ids, starts, outs, labs, masks):
                    pred, target, keep = seqs[q]
                    n = min(len(o), len(pred) - s)
                    pred[s:s + n], target[s:s + n], keep[s:s + n] = o[:n], lab[:n], m[:n]
        return loss, seqs

    def validate(self):
        """Validation metrics: {loss, and the head's metrics (see config.METRICS)}."""
        loss, seqs = self.predict_valid()
        metrics = {"loss": loss}
        kept = [(p[k], t[k]) for p, t, k in seqs]
        preds = [p for p, _ in kept if len(p)]
        targets = [t for p, t in kept if len(p)]
        if not preds:
            raise InputError(None, "no validation frame is left (all masked out)")
        for p in preds:
            if not np.isfinite(p).all():
                raise NonFiniteLossError("the model's validation outputs are NaN or infinite; "
                                         f"training stopped, the last good checkpoint is "
                                         f"{self.last_path}")
        if self.head == "multiclass":  # frames without a class are not scored
            keep = [t.max(axis=1) >= 0.5 for t in targets]
            preds = [p[k] for p, k in zip(preds, keep)]
            targets = [t[k] for t, k in zip(targets, keep)]
        base = unwrap_model(self.model)
        preds = [base.activate(torch.from_numpy(p)).numpy() for p in preds]
        report = score(preds, targets, self.head, names=self.label_names)
        if self.head == "regression":
            for key in ("ccc", "pearson", "rmse", "mae"):
                values = [getattr(report.pooled[n], key) for n in self.label_names]
                metrics[key] = float(np.mean(values))
            for n in self.label_names:
                metrics[f"ccc_{n}"] = float(report.pooled[n].ccc)
        elif self.head == "multiclass":
            metrics.update(accuracy=report.accuracy, uar=report.uar, f1=report.macro_f1)
        else:
            metrics.update(auc=report.macro_auc, f1=report.macro_f1)
        return metrics
