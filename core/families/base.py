"""The model-family contract and its registry: one family per file of core/families.

A model family is a translator with its own networks and training loop (StarGAN
v2, CUT). Every family shares the command line's machinery, the data, the
checkpoints, the processes, the precision flags, the patch-loss registry and
the metrics; a family adds its own flags, its presets, the defaults it gives
shared flags, how its flags become the fields the shared code reads, and the
table of modes it runs (core.modes.Mode entries).

How a command line picks its family (select), documented in docs/cut.md:
  * --model NAME names it; the flags that only another family reads are then
    refused, never silently dropped;
  * without --model, the family whose own flags (or preset) the command line
    uses is chosen; a command line that uses none is read as the default
    family's (StarGAN v2, as before the families existed), and one that uses
    the own flags of two families is refused: nothing is guessed.
This module imports no mode, network or command-line code: core.config builds
the parser from the registered families, and each family names its modes.
"""
import sys

from core.utils.registry import Plugin, Registry

FAMILIES = Registry('model family')
register, registered, get = FAMILIES.register, FAMILIES.registered, FAMILIES.get


class Family(Plugin):
    """One model family. Class attributes and classmethods only: a family is a table, never instantiated."""
    default = False             # the family of a command line that names none and uses no family's own flags
    help = ''                   # one line for --model's help
    demo_preset = None          # the preset of --mode demo when no --preset is given

    @classmethod
    def presets(cls):
        """{name: {dest: value}} of this family's --preset values (defaults only: flags win)."""
        return {}

    @classmethod
    def own_flags(cls):
        """The option strings that only this family reads ('--dataroot', ...): they select it, and are refused
        with another family's --model."""
        return {f'--{dest}' for dest in cls.own_dests()}

    @classmethod
    def own_dests(cls):
        """The config fields of the flags that only this family reads: the other families' configs drop them."""
        return set()

    @classmethod
    def defaults(cls, argv):
        """{dest: value}: defaults this family gives shared flags (before its preset and the command line)."""
        return {}

    @classmethod
    def derive(cls, cfg):
        """The resolved core.runconfig.Config with the fields the shared code reads computed from this family's
        own flags (e.g. --num_patches -> n_patch). Then core.config validates it and leaves out the other
        families' own fields, but those named by computed()."""
        return cfg

    @classmethod
    def computed(cls):
        """Fields of other families' flags that derive() sets for the shared code (kept in this family's configs)."""
        return set()

    @classmethod
    def errors(cls, cfg):
        """Problems of this family's own flags, each naming its flag (the shared ones are core.config's)."""
        return []

    @classmethod
    def shared_message(cls, message):
        """A shared check's message as this family names its flags (e.g. --n_patch -> --num_patches)."""
        return message

    @classmethod
    def modes(cls):
        """{name: core.modes.Mode} of the modes this family runs."""
        return {}


def option_strings(argv):
    """The flags of argv ('--x' of '--x=1' too), in order."""
    return [arg.split('=', 1)[0] for arg in argv if arg.startswith('--')]


def flag_value(argv, flag):
    """The last value of `flag` in argv, or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + '='):
            found = arg.split('=', 1)[1]
    return found


def default_family():
    return next(FAMILIES.get(name) for name in registered() if FAMILIES.get(name).default)


def _claims(family, flags, preset):
    """The flags (and '--preset NAME') of a command line that belong to `family` only."""
    own = family.own_flags()
    return [f for f in dict.fromkeys(flags) if f in own] + \
        ([f'--preset {preset}'] if preset in family.presets() else [])


def select(argv=None):
    """(family class, errors) of a command line, read before it is parsed: the family changes defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, preset, named = option_strings(argv), flag_value(argv, '--preset'), flag_value(argv, '--model')
    claims = {name: _claims(get(name), flags, preset) for name in registered()}
    if named is not None:
        if named not in FAMILIES:
            return default_family(), [f'--model {named}: not a model family of this toolkit (it trains '
                                      f'--model {" or --model ".join(registered())}; CUT\'s other models, e.g. '
                                      f'sincut or cycle_gan, are not part of it)']
        return get(named), [_foreign(used, other, named) for other, used in claims.items()
                            if other != named and used]
    claimed = [name for name, used in claims.items() if used]
    if len(claimed) > 1:
        parts = ' and '.join(f'{", ".join(claims[name])} belong to --model {name}' for name in claimed)
        return default_family(), [f'ambiguous command line: {parts}; name the family with '
                                  f'{" or ".join("--model " + name for name in claimed)} and drop the other '
                                  f'family\'s flags']
    return (get(claimed[0]) if claimed else default_family()), []


def _foreign(flags, owner, model):
    return f'{", ".join(flags)}: flag(s) of --model {owner}, not used by --model {model}; drop them'


def family_of(cfg):
    """The family class of a resolved config (configs of the default family need not store their family)."""
    name = cfg.get('model')
    return get(name) if name is not None else default_family()


def mode_of(cfg):
    """The core.modes.Mode that runs cfg.mode for cfg's family."""
    return family_of(cfg).modes()[cfg.mode]


def in_order():
    """The registered family classes, the default family first."""
    first = default_family()
    return [first] + [get(name) for name in registered() if get(name) is not first]


def mode_names():
    """Every --mode value of any family, the default family's first, in the order each family lists them."""
    return list(dict.fromkeys(name for family in in_order() for name in family.modes()))


def presets():
    """{name: defaults} of every family's presets."""
    return {name: values for family in in_order() for name, values in family.presets().items()}


def family_of_preset(name):
    """The family class whose preset `name` is, or None."""
    return next((family for family in in_order() if name in family.presets()), None)
