"""--metrics domain_acc: the fraction of each task's outputs that the domain classifier puts in the target domain.

It scores eval's own outputs (every val image, num_outs_per_domain outputs
each, per task), so its numbers differ from the CPU benchmark's
(metrics/benchmark.py: at most max_sources per domain, one output per target
and mode). Chance is 1 / num_domains; the real val images score
classifier_val_acc, written beside the values.
"""
import os

import torch

from core.data.images import list_domains
from metrics.classifier import load_or_train_classifier, predict
from metrics.registry import Metric, Series, register


@register('domain_acc')
class DomainAccuracy(Metric):
    """Per task: the fraction of outputs the domain classifier puts in the target domain."""
    series = (Series('domain_acc'),)

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(load_or_train_classifier(cfg, device), list_domains(cfg.train_img_dir))

    def __init__(self, classifier, names):
        """classifier: a Munch from load_or_train_classifier; names: its domains, in label order."""
        self.classifier, self.label = classifier, {name: y for y, name in enumerate(names)}

    def update(self, task, batch):
        y = self.label[task.trg]
        return {'hit': torch.cat([predict(self.classifier.model, x_fake) == y for x_fake in batch.x_fake]).long()}

    def end_task(self, task, rows):
        return {'domain_acc': int(rows['hit'].sum()) / rows['hit'].numel()}

    def fields(self, series):
        return {'classifier': os.path.basename(self.classifier.path), 'classifier_val_acc': self.classifier.val_acc}
