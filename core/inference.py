"""No-grad translation primitives shared by debug images, sampling, video and evaluation.

They take the specific networks and tensors they need and return tensors;
writing files is the caller's business.
"""
import torch


@torch.no_grad()
def all_domain_styles(mapping_network, z):
    """Style codes of every domain for each z: (N, latent_dim) -> (N, num_domains, style_dim)."""
    return mapping_network.all_styles(z)


@torch.no_grad()
def average_styles(mapping_network, latent_dim, num=10000, generator=None, device='cpu', chunk=2500):
    """Mean style of every domain over `num` random z: (num_domains, style_dim).

    This is the centre of the truncation trick (psi < 1), as upstream.
    """
    total = 0
    for start in range(0, num, chunk):
        z = torch.randn(min(chunk, num - start), latent_dim, generator=generator).to(device)
        total = total + all_domain_styles(mapping_network, z).sum(dim=0)   # (num_domains, style_dim)
    return total / num


def truncate(s, s_avg, psi):
    """Truncation trick: move style s toward the domain average by 1 - psi."""
    return torch.lerp(s_avg, s, psi)


@torch.no_grad()
def translate_styles(generator, x_src, styles):
    """Translate one source batch with several styles, encoding the sources only once.

    x_src (N, 3, S, S); styles: iterable of (N or 1, style_dim). Yields (N, 3, S, S) per style.
    """
    enc = generator.run_encoder(x_src)
    for s in styles:
        yield generator.run_decoder(enc, s)
