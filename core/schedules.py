"""Training schedules as pure functions of the (0-based) iteration.

Nothing here keeps state: resuming at step k gives exactly the values an
uninterrupted run would have used at step k.
"""


def lambda_ds_at(step, lambda_ds, ds_iter):
    """Diversity-sensitive weight, decayed linearly from lambda_ds to 0 over ds_iter steps.

    StarGAN v2 subtracts lambda_ds / ds_iter after every iteration; this is the
    closed form of that decay, clamped at 0 (upstream can end slightly negative).
    """
    if ds_iter <= 0:
        return 0.0
    return max(0.0, lambda_ds * (1.0 - step / ds_iter))


def gamma_at(step, gamma_start, gamma_end, total_iters, use_curriculum):
    """Hard-negative temperature g of hDCE (Jung et al. 2022, released schedule).

    g is a temperature (the paper's gamma is about 1/g): large g gives nearly
    uniform negative weights, small g concentrates on the hardest negatives.
    With the curriculum it moves linearly from gamma_start to gamma_end over
    total_iters, using the absolute iteration so that resuming is exact.
    """
    if not use_curriculum or total_iters <= 0:
        return float(gamma_start)
    frac = min(max(step / total_iters, 0.0), 1.0)
    return float(gamma_start + (gamma_end - gamma_start) * frac)


def linear_decay_factor(epoch, n_epochs, n_epochs_decay):
    """CUT's --lr_policy linear: the learning-rate factor during the 1-based `epoch`.

    1 for the first n_epochs, then 1 - (epoch - n_epochs) / (n_epochs_decay + 1):
    the release's LambdaLR, which steps once per epoch and never reaches 0.
    """
    return 1.0 - max(0, epoch - n_epochs) / (n_epochs_decay + 1)


def epoch_gamma_at(epoch, gamma_start, gamma_end, num_epochs, use_curriculum, step_epoch=None):
    """hDCE temperature g of Hneg_SRC Single-modal during the 1-based `epoch` (per epoch, not per step).

    With the curriculum g = gamma_start + (gamma_end - gamma_start) * epoch / num_epochs,
    and with --step_gamma (step_epoch set) g = 1 after step_epoch; without it, gamma_start.
    """
    if not use_curriculum:
        return float(gamma_start)
    if step_epoch is not None and epoch > step_epoch:
        return 1.0
    return float(gamma_start + (gamma_end - gamma_start) * epoch / num_epochs)
