"""The resolved config of a run (Config: the flags) and the facts of the run kept beside it (RunFacts).

A Config holds flags only: it is what --dry_run prints, what config.json and
every checkpoint store under 'config', and what a resume compares. Facts that
no flag sets (the training folders' domain names, the flags the command line
gave) ride along as cfg.facts and are stored apart: run.json beside
config.json, 'run' in every checkpoint. Files of the earlier layout kept the
facts inside the config; read_config moves them out.

The command line that builds a Config is core/config.py; this module is the
record every layer below it reads (checks, checkpoints, inference, training).
"""
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Optional, Tuple

from core.utils.errors import UserError

# Fields that define the shapes of the saved networks: a checkpoint whose
# stored values differ cannot be loaded into nets built from this config.
NET_FIELDS = ('arch', 'img_size', 'style_dim', 'latent_dim', 'hidden_dim', 'num_domains',
              'w_hpf', 'base_dim', 'max_conv_dim')
ARCH_FIELDS = NET_FIELDS + ('nce_layers', 'patch_dim', 'patch_losses')


class ConfigError(UserError):
    """A bad flag, flag combination or input of a mode; the message names the flag."""


@dataclass(frozen=True)
class RunFacts:
    """What a run is, beyond its flags; never written to config.json, never compared on resume."""
    domain_names: Optional[Tuple[str, ...]] = None   # the training folders, in domain-id order (None: unknown)
    explicit_flags: Tuple[str, ...] = ()             # dests of the flags the command line gave, sorted

    def to_json(self):
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_fields(cls, fields):
        """RunFacts from a dict (JSON lists become tuples); keys it does not know are ignored."""
        names, given = fields.get('domain_names'), fields.get('explicit_flags') or ()
        return cls(tuple(names) if names is not None else None, tuple(given))


class Config(Mapping):
    """Read-only attribute access to the resolved flags; cfg.facts holds the run's RunFacts."""

    def __init__(self, facts=None, /, **fields):
        object.__setattr__(self, '_fields', dict(fields))
        object.__setattr__(self, 'facts', facts or RunFacts())

    def __getattr__(self, name):
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f'config has no field {name!r}') from None

    def __setattr__(self, name, value):
        raise AttributeError('the config is immutable; build a new one with replace()')

    def __getitem__(self, name):
        return self._fields[name]

    def __iter__(self):
        return iter(self._fields)

    def __len__(self):
        return len(self._fields)

    def __repr__(self):
        return f'Config({self._fields!r}, {self.facts!r})'

    def replace(self, **changes):
        """A new Config with some flags changed and the same facts (the original is untouched)."""
        return Config(self.facts, **{**self._fields, **changes})

    def without(self, names):
        """A new Config without the fields in `names` (those it does not have are ignored), with the same facts."""
        return Config(self.facts, **{k: v for k, v in self._fields.items() if k not in set(names)})

    def with_facts(self, **changes):
        """A new Config with the same flags and some RunFacts fields changed."""
        return Config(replace(self.facts, **changes), **self._fields)

    def to_json(self):
        """The flags as JSON (the facts are stored apart: RunFacts.to_json)."""
        return json.dumps(self._fields, indent=2)

    @classmethod
    def from_fields(cls, fields, facts=None):
        """A Config of a dict of flags whose lists (JSON's tuples) become tuples again."""
        return cls(facts, **_tuples(fields))

    @classmethod
    def from_json(cls, text):
        return cls.from_fields(json.loads(text))


def _tuples(fields):
    """JSON turns tuples into lists; restore them so configs compare equal after a round trip."""
    def fix(v):
        return tuple(fix(x) for x in v) if isinstance(v, list) else v
    return {k: fix(v) for k, v in fields.items()}


def read_config(config_text, run_text=None):
    """The Config stored as JSON, with its RunFacts: from run_text, else from the config itself.

    Configs of the earlier layout held the facts as fields; they are moved out,
    so an old file compares with a new one flag by flag.
    """
    fields = json.loads(config_text)
    legacy = {name: fields.pop(name) for name in RunFacts.__dataclass_fields__ if name in fields}
    return Config.from_fields(fields, RunFacts.from_fields(json.loads(run_text) if run_text is not None else legacy))


def evaluates(cfg):
    """True if the run computes metrics: --mode eval, or training that reaches an --eval_every step."""
    return cfg.mode == 'eval' or (cfg.mode == 'train' and 0 < cfg.eval_every <= cfg.total_iters)


def arch_signature(cfg):
    """The architecture-defining values of a config (patch losses by name only)."""
    sig = {k: cfg.get(k) for k in ARCH_FIELDS}
    if sig['patch_losses'] is not None:
        sig['patch_losses'] = tuple(sorted(name for name, _ in sig['patch_losses']))
    return sig


def arch_differences(stored, cfg, fields=ARCH_FIELDS):
    """Fields among `fields` whose stored value differs from cfg: {field: (stored, current)}."""
    a, b = arch_signature(stored), arch_signature(cfg)
    return {k: (a[k], b[k]) for k in fields if k in stored and a[k] != b[k]}
