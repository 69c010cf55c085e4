"""README.md and docs/*.md: every command they show parses, every relative link resolves, every flag is documented.

Each shell command of a ```bash block is checked by what it starts with:
  python main.py ...        parsed by main.run with --dry_run (the modes themselves run in the other tests)
  python -m pytest ...      pytest is installed and its paths exist
  python -m MODULE ...      the module exists, --help works and knows every flag shown
  python SCRIPT.py ...      the script exists, --help works and knows every flag shown
  bash download.sh TARGET   the target is one that download.sh lists
  pip install -r FILE       the file exists
A command that cannot run here (GPUs, several machines, other people's code, the network) is listed
in NOT_RUNNABLE with the reason, and still gets the checks above that apply (a torchrun command's
main.py flags are parsed). A command in none of these classes fails the test.
"""
import contextlib
import importlib.util
import json
import os
import re
import runpy
import shlex
import subprocess
import sys

import pytest

import main
from core.config import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(os.path.join('docs', f) for f in os.listdir(os.path.join(ROOT, 'docs'))
                               if f.endswith('.md'))

# Command prefix -> why it cannot run on a CPU-only test machine.
NOT_RUNNABLE = {
    'pip install': 'installs packages from the network',
    'torchrun': 'one process per GPU: needs 8 GPUs, and with --nnodes a second machine',
    'python bench/hsrc_reference.py': 'needs a clone of the released Hneg_SRC code (--hsrc_dir)',
    'python bench/eval_speed.py --official': 'needs a clone of the official StarGAN v2 code and about 20 CPU minutes',
    'python bench/train_step.py --preset seasons': 'its --nproc 8 processes are meant for 8 GPUs',
    'python bench/train_step.py --arch hsrc --img_size 128': 'minutes per iteration on a CPU',
    'python bench/ablation.py': '33 training runs: about an hour on a 2-core CPU',
    'python bench/quality.py': 'needs the demo model (python main.py --mode demo)',
    'bash download.sh': 'downloads data and weights (synthetic-* render for minutes)',
}

# Scripts whose --help cannot run without other arguments: why.
NO_HELP = {'bench/hsrc_reference.py': 'its parser requires --hsrc_dir before it reads --help'}

# Pages linked before they exist in this tree, each added separately. Drop an entry once its file exists.
PENDING_PAGES = set()


# ----------------------------------------------------------------------------------------------
# Reading the pages
# ----------------------------------------------------------------------------------------------

def _read(page):
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


def fenced_blocks(text):
    """[(info string, body)] of the page's ``` blocks."""
    return re.findall(r'^```([^\n]*)\n(.*?)^```', text, flags=re.M | re.S)


def shell_commands(body):
    """The commands of a bash block: continuation lines joined, comments dropped, && split."""
    commands = []
    for line in re.sub(r'\\\n\s*', ' ', body).split('\n'):
        argv = shlex.split(line, comments=True)
        while argv:
            cut = argv.index('&&') if '&&' in argv else len(argv)
            commands.append(shlex.join(argv[:cut]))
            argv = argv[cut + 1:]
    return commands


def all_commands():
    found = []
    for page in PAGES:
        for info, body in fenced_blocks(_read(page)):
            if info.strip() == 'bash':
                found += [(page, cmd) for cmd in shell_commands(body)]
    return found


COMMANDS = all_commands()


def _argv(command):
    """The command's argv without leading VAR=value assignments."""
    argv = shlex.split(command)
    while argv and re.match(r'^[A-Z_]+=', argv[0]):
        argv = argv[1:]
    return argv


def _not_runnable_reason(command):
    plain = shlex.join(_argv(command))
    return next((why for prefix, why in NOT_RUNNABLE.items() if plain.startswith(prefix)), None)


# ----------------------------------------------------------------------------------------------
# Checks per kind of command
# ----------------------------------------------------------------------------------------------

MAIN_FLAGS = {opt for action in build_parser()._actions for opt in action.option_strings}


def _flags(argv):
    return [a.split('=', 1)[0] for a in argv if a.startswith('--')]


def check_main(args, capsys):
    main.run(args + ['--dry_run'])
    cfg = json.loads(capsys.readouterr().out)
    assert cfg['mode'] == args[args.index('--mode') + 1]


def _help_text(run, argv0, monkeypatch, capsys):
    """What `argv0 --help` prints, run in this process (the project is already imported, so it is fast)."""
    monkeypatch.setattr(sys, 'argv', [argv0, '--help'])
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(sys.stdout):
        run()
    assert stop.value.code in (0, None), f'{argv0} --help exited with {stop.value.code}'
    return capsys.readouterr().out


def check_help_knows_flags(source_path, help_text, argv):
    """Every --flag shown is in the help, in the script's own code or among main.py's flags."""
    with open(source_path, encoding='utf-8') as f:
        source = f.read()
    unknown = [flag for flag in _flags(argv)
               if flag not in help_text and f"'{flag}'" not in source and flag not in MAIN_FLAGS]
    assert unknown == [], f'{os.path.relpath(source_path, ROOT)} does not know {unknown}'


def check_python_module(argv, monkeypatch, capsys):
    module = argv[2]
    if module == 'pytest':
        assert importlib.util.find_spec('pytest') is not None
        assert all(os.path.exists(os.path.join(ROOT, a)) for a in argv[3:] if not a.startswith('-'))
        return
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin.startswith(ROOT), f'{module} is not a module of the project'
    text = _help_text(lambda: runpy.run_module(module, run_name='__main__', alter_sys=True), module,
                      monkeypatch, capsys)
    check_help_knows_flags(spec.origin, text, argv[3:])


def check_python_script(argv, monkeypatch, capsys):
    path = os.path.join(ROOT, argv[1])
    assert os.path.isfile(path), f'{argv[1]} does not exist'
    if argv[1] not in NO_HELP:
        text = _help_text(lambda: runpy.run_path(path, run_name='__main__'), argv[1], monkeypatch, capsys)
        check_help_knows_flags(path, text, argv[2:])


_DOWNLOAD_TARGETS = []


def download_targets():
    """The targets `bash download.sh` lists (it exits non-zero after listing them)."""
    if not _DOWNLOAD_TARGETS:
        out = subprocess.run(['bash', os.path.join(ROOT, 'download.sh')], capture_output=True, text=True)
        listing = out.stdout + out.stderr
        _DOWNLOAD_TARGETS.extend(re.findall(r'^  ([a-z0-9][a-z0-9-]*)', listing, flags=re.M))
        _DOWNLOAD_TARGETS.extend(re.findall(r'\(alias ([a-z0-9-]+)\)', listing))
        _DOWNLOAD_TARGETS.extend(re.findall(r', ([a-z0-9-]+-dataset)', listing))
    return _DOWNLOAD_TARGETS


def check_command(command, monkeypatch, capsys):
    argv = _argv(command)
    reason = _not_runnable_reason(command)
    if argv[:2] == ['python', 'main.py']:
        check_main(argv[2:], capsys)
    elif argv[0] == 'torchrun':
        assert reason, 'a torchrun command must be listed in NOT_RUNNABLE'
        assert 'main.py' in argv
        check_main(argv[argv.index('main.py') + 1:], capsys)
    elif argv[:2] == ['python', '-m']:
        check_python_module(argv, monkeypatch, capsys)
    elif argv[0] == 'python' and argv[1].endswith('.py'):
        check_python_script(argv, monkeypatch, capsys)
    elif argv[:2] == ['bash', 'download.sh']:
        assert argv[2] in download_targets(), f'download.sh has no target {argv[2]}'
    elif argv[:3] == ['pip', 'install', '-r']:
        assert reason and os.path.isfile(os.path.join(ROOT, argv[3]))
    else:
        assert reason, f'no check for this command and not listed in NOT_RUNNABLE: {command}'


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def test_the_pages_show_the_commands_of_every_kind():
    kinds = {' '.join(_argv(cmd)[:2]) for _, cmd in COMMANDS}
    assert len(COMMANDS) >= 40
    assert {'python main.py', 'python -m', 'bash download.sh', 'torchrun --standalone'} <= kinds
    quick_start = [cmd for page, cmd in COMMANDS if page == 'README.md'][:4]
    assert quick_start == ['pip install -r requirements.txt', 'python main.py --mode demo',
                           'pip install -r requirements.txt', 'python -m pytest -q tests']


def test_every_code_block_names_its_language():
    for page in PAGES:
        for info, body in fenced_blocks(_read(page)):
            assert info.strip() in ('bash', 'text', 'bibtex', 'python'), f'{page}: a ``` block without a known language'


@pytest.mark.parametrize('page,command', COMMANDS,
                         ids=[f'{p}:{c[:70]}' for p, c in COMMANDS])
def test_every_command_parses_or_is_listed(page, command, monkeypatch, capsys):
    check_command(command, monkeypatch, capsys)


def test_every_not_runnable_entry_names_a_shown_command():
    shown = [shlex.join(_argv(cmd)) for _, cmd in COMMANDS]
    unused = [prefix for prefix in NOT_RUNNABLE if not any(cmd.startswith(prefix) for cmd in shown)]
    assert unused == []


def _anchor(heading):
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _anchors(page):
    return {_anchor(h) for h in re.findall(r'^#+ (.*)$', re.sub(r'^```.*?^```', '', _read(page), flags=re.M | re.S),
                                           flags=re.M)}


def test_every_relative_link_points_to_an_existing_file_and_heading():
    bad = []
    for page in PAGES:
        for target in re.findall(r'\]\(([^)\s]+)\)', _read(page)):
            if re.match(r'^[a-z]+://', target):
                continue
            path, _, anchor = target.partition('#')
            linked = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if linked in PENDING_PAGES and not os.path.exists(os.path.join(ROOT, linked)):
                continue
            if not os.path.exists(os.path.join(ROOT, linked)):
                bad.append(f'{page}: {target} (no such file)')
            elif anchor and linked.endswith('.md') and anchor not in _anchors(linked):
                bad.append(f'{page}: {target} (no such heading)')
    assert bad == []


def test_the_anchor_of_a_heading_is_githubs():
    assert _anchor('`--mode eval`') == '--mode-eval'
    assert _anchor('Ablation: every loss on equal terms') == 'ablation-every-loss-on-equal-terms'
    assert _anchor('32 px, every speed flag (2026-12-01)') == '32-px-every-speed-flag-2026-12-01'


def test_every_flag_is_documented():
    text = '\n'.join(_read(page) for page in PAGES)
    missing = [flag for flag in sorted(MAIN_FLAGS)
               if flag.startswith('--') and flag != '--help' and not re.search(re.escape(flag) + r'(?![\w-])', text)]
    assert missing == []


def test_the_readme_stays_a_guide():
    assert len(_read('README.md').splitlines()) <= 250
