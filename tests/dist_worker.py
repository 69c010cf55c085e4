"""main.py for the multi-process tests; with STARGAN_TEST_KILL_AT=N the process of rank 1 dies
(SIGKILL-like, no clean-up) before iteration N of its first attempt, as a crashed GPU would."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import core.trainer as trainer  # noqa: E402
from main import main  # noqa: E402

kill_at = int(os.environ.get('STARGAN_TEST_KILL_AT', '0'))
if kill_at and os.environ.get('RANK') == '1' and os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') == '0':
    real_step = trainer.train_step

    def dying_step(run, cfg, batch, step, device):
        if step + 1 == kill_at:
            os._exit(9)
        return real_step(run, cfg, batch, step, device)
    trainer.train_step = dying_step

sys.exit(main())
