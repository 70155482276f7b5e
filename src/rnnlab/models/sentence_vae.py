"""The sentence VAE (Bowman et al. 2016), encoder and decoder from the cell zoo.

    encoder   q(z | w) = N(mu, diag sigma^2), [mu, log sigma^2] = W_q h_enc + b_q,
              h_enc = the encoder's final state over the words (no <sos>, with <eos>)
    decoder   h_0 = tanh(W_h z + b_h);  p(w_t | w_<t, z) = softmax(W_o h_t + b_o),
              inputs <sos> w_1 .. w_{n}; with ``latent_every_step`` z is also concatenated to
              every input; word dropout replaces inputs by <unk> with probability p (training)
    prior     p(z) = N(0, I)

``dropout`` acts on the non-recurrent connections: the encoder's and the decoder's input
embeddings, between stacked layers, and the decoder's outputs before the softmax (training only).
Encoder and decoder are ``Recurrent`` stacks with every layer option of the config (layers, layer
norm, recurrent dropout, zoneout, ...); with L layers, z sets every decoder layer's h_0
(``to_state`` maps z to L * H units) and the encoder's top layer gives the posterior.

The same class is the baseline Bowman et al. compare against, a language model over independent
sentences (``model="sentence-lm"``): no encoder and no latent, the decoder starting from a zero
state. Its KL is 0 and its "importance-weighted" NLL is the exact NLL, so both models are scored
per sentence by the same code.

``forward`` returns per-sentence terms: the reconstruction log-likelihood at one posterior sample,
the closed-form KL (and its value per latent unit, for free bits), and the log ratio
log p(z) - log q(z | w) for importance weights (``rnnlab.losses``).

>>> vae = SentenceVAE(ModelConfig(model="sentence-vae", hidden_size=8, z_size=3), vocab_size=20)
>>> words = torch.randint(3, 20, (4, 6)); lengths = torch.tensor([6, 5, 2, 1])
>>> out = vae(words, lengths)
>>> tuple(out.log_lik.shape), tuple(out.kl_units.shape)
((4,), (4, 3))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab import device as draw
from rnnlab.losses import gaussian_kl, gaussian_log_prob, importance_weighted_bound
from rnnlab.models.rnn import ModelConfig, make_recurrent

SOS_ID, EOS_ID, UNK_ID, PAD_ID = 0, 1, 2, 3  # the sentence view's fixed ids (rnnlab.data.text)


class VAETerms(NamedTuple):
    log_lik: Tensor  # (B,) log p(w | z) at the sampled z
    kl: Tensor  # (B,) KL(q(z | w) || p(z))
    kl_units: Tensor  # (B, Z) the KL of each latent unit
    log_ratio: Tensor  # (B,) log p(z) - log q(z | w) at the sampled z
    mean: Tensor  # (B, Z) the posterior means (for active units and mutual information)
    log_var: Tensor  # (B, Z)


class SentenceVAE(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        E = config.embedding_size or config.hidden_size
        H, Z = config.hidden_size, config.z_size
        self.latent = config.model == "sentence-vae"
        self.z_size = Z if self.latent else 0
        self.embedding = nn.Embedding(vocab_size, E, padding_idx=PAD_ID)
        if self.latent:
            self.encoder = make_recurrent(config, E)
            self.to_posterior = nn.Linear(H, 2 * Z)
            self.to_state = nn.Linear(Z, config.num_layers * H)  # every layer's h_0
        extra = Z if config.latent_every_step and self.latent else 0
        self.decoder = make_recurrent(config, E + extra)
        self.output = nn.Linear(H, vocab_size)
        self.parts = len(self.decoder.layer_cells[0].state_widths)

    def _embed(self, words: Tensor) -> Tensor:
        return F.dropout(self.embedding(words), self.config.dropout, self.training)

    def encode(self, words: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """words (B, T) without <sos>, with <eos>; -> mean, log_var (B, Z) (Z = 0 for the LM)."""
        if not self.latent:
            empty = words.new_zeros((words.shape[0], 0), dtype=self.output.weight.dtype)
            return empty, empty
        _, state = self.encoder(self._embed(words), lengths=lengths)
        mean, log_var = self.to_posterior(state[0][-1]).chunk(2, -1)  # the top layer's
        return mean, log_var

    def decode_logits(
        self, z: Tensor, inputs: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Teacher-forced decoding: inputs (B, T) start with <sos>; -> logits (B, T, V)."""
        x = self._embed(inputs)
        if self.config.latent_every_step and self.latent:
            x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], -1)
        out, state = self.decoder(x, lengths=lengths, state=self._initial_state(z))
        out = F.dropout(out, self.config.dropout, self.training)
        return self.output(out), state

    def _initial_state(self, z: Tensor) -> tuple[Tensor, ...]:
        L, B, H = self.config.num_layers, z.shape[0], self.config.hidden_size
        if self.latent:
            h0 = torch.tanh(self.to_state(z)).view(B, L, H).transpose(0, 1)  # (L, B, H)
        else:
            h0 = z.new_zeros((L, B, H))
        return (h0,) + tuple(torch.zeros_like(h0) for _ in range(self.parts - 1))

    def forward(
        self, words: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> VAETerms:
        """words (B, T): each sentence's words then <eos>, padded with <pad>; lengths (B,)."""
        mean, log_var = self.encode(words, lengths)
        return self._terms(words, lengths, mean, log_var, generator)

    def _terms(
        self,
        words: Tensor,
        lengths: Tensor,
        mean: Tensor,
        log_var: Tensor,
        generator: torch.Generator | None,
    ) -> VAETerms:
        """The per-sentence terms at one sample of z from the posterior N(mean, exp(log_var))."""
        noise = draw.normal(mean.shape, generator, mean)
        z = mean + (0.5 * log_var).exp() * noise
        inputs = torch.cat([torch.full_like(words[:, :1], SOS_ID), words[:, :-1]], 1)
        if self.training and self.config.word_dropout:
            drop = draw.uniform(inputs.shape, generator, mean) < self.config.word_dropout
            drop[:, 0] = False  # <sos> stays
            inputs = torch.where(drop, UNK_ID, inputs)
        logits, _ = self.decode_logits(z, inputs, lengths)
        token_ll = -F.cross_entropy(logits.transpose(1, 2), words, reduction="none")  # (B, T)
        valid = torch.arange(words.shape[1], device=words.device)[None, :] < lengths[:, None]
        log_lik = (token_ll * valid).sum(1)
        zeros = torch.zeros_like(mean)
        kl_units = gaussian_kl(
            mean[..., None], log_var[..., None], zeros[..., None], zeros[..., None]
        )
        log_ratio = gaussian_log_prob(z, zeros, zeros) - gaussian_log_prob(z, mean, log_var)
        return VAETerms(log_lik, kl_units.sum(-1), kl_units, log_ratio, mean, log_var)

    @torch.no_grad()
    def iw_log_likelihood(
        self, words: Tensor, lengths: Tensor, k: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B,) importance-weighted estimate of log p(w) with k posterior samples each (the
        encoder runs once; the decoder once per sample)."""
        B = words.shape[0]
        mean, log_var = self.encode(words, lengths)
        terms = self._terms(
            words.repeat(k, 1), lengths.repeat(k), mean.repeat(k, 1), log_var.repeat(k, 1),
            generator,
        )  # fmt: skip
        log_w = (terms.log_lik + terms.log_ratio).view(k, B)
        return importance_weighted_bound(log_w, dim=0)

    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        max_len: int = 50,
        temperature: float = 0.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Decode each z (B, Z) word by word until <eos>: greedy when temperature is 0, else
        sampling from softmax(logits / temperature), among the top_k words when top_k > 0."""
        B = z.shape[0]
        state = self._initial_state(z)
        token = torch.full((B, 1), SOS_ID, dtype=torch.long, device=z.device)
        out: list[list[int]] = [[] for _ in range(B)]
        done = torch.zeros(B, dtype=torch.bool)
        for _ in range(max_len):
            x = self.embedding(token)
            if self.config.latent_every_step and self.latent:
                x = torch.cat([x, z[:, None, :]], -1)
            h, state = self.decoder(x, state=state)
            logits = self.output(h[:, -1])
            logits[:, [SOS_ID, PAD_ID]] = -torch.inf
            if temperature <= 0:
                token = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k > 0:
                    kth = logits.topk(top_k, -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, -torch.inf)
                token = draw.categorical(logits.softmax(-1), generator)
            for b in range(B):
                if not done[b]:
                    if int(token[b]) == EOS_ID:
                        done[b] = True
                    else:
                        out[b].append(int(token[b]))
            if bool(done.all()):
                break
        return out
