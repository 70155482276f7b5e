"""The tiny data of every model family, for the registry-wide tests (import with
``from family_fixtures import family_data``)."""

import numpy as np

TOY_LINES = ["the cat sat on the mat", "a dog ran in the park", "the dog sat on a cat",
             "a cat ran", "the park is big", "a big dog sat", "the mat is red"]  # fmt: skip


def _series_csv(path):
    """Two numeric columns, a seasonal one and a noisy trend (no other flag needed)."""
    rng = np.random.default_rng(0)
    t = np.arange(300)
    a = np.sin(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(300)
    b = 0.01 * t + 0.2 * rng.standard_normal(300)
    rows = ["a,b"] + [f"{x:.5f},{y:.5f}" for x, y in zip(a, b, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def tone_corpus(directory, per_split=(12, 4, 4), seed=0):
    """A speech corpus in espeak-synth's format whose 'phones' are tones (a phone = 0.1 s of a
    sine at its own pitch, with noise), speakers disjoint by split; no espeak-ng needed."""
    from rnnlab.data import synth_speech

    rng = np.random.default_rng(seed)
    rate, pitches = 8000, {"a": 300.0, "b": 700.0, "c": 1500.0, "d": 2500.0}
    audio, phones, meta = [], [], []
    for split, n in zip(("train", "valid", "test"), per_split, strict=True):
        for i in range(n):
            seq = tuple(rng.choice(list(pitches), int(rng.integers(2, 6))))
            t = np.arange(int(0.1 * rate)) / rate
            wave = np.concatenate([np.sin(2 * np.pi * pitches[p] * t) for p in seq])
            wave = 0.3 * wave + 0.01 * rng.standard_normal(len(wave))
            audio.append(np.rint(wave * 32767).astype(np.int16))
            phones.append(seq)
            meta.append((f"{split}-speaker{i % 2}", split, rate, " ".join(seq)))
    arrays = synth_speech.pack(audio, phones, meta)
    return synth_speech.save(arrays, {"espeak_ng": "none (tones)"}, directory)


def family_data(root):
    """Writes each family's tiny data under ``root``; returns the `rnnlab train` arguments that
    name it, by family. A new family must add its data here, or the registry tests fail."""
    from rnnlab.data.polyphonic import PianoRolls, save_npz

    rng = np.random.default_rng(0)

    def pieces(n):
        return [rng.random((int(rng.integers(4, 12)), 88)) < 0.05 for _ in range(n)]

    npz = root / "tiny.npz"
    save_npz(PianoRolls("tiny", "test", {"train": pieces(6), "valid": pieces(3),
                                         "test": pieces(3)}), npz)  # fmt: skip
    text = root / "text"
    text.mkdir()
    for split, lines in (("train", TOY_LINES), ("valid", TOY_LINES[:3]), ("test", TOY_LINES[3:])):
        (text / f"toy.{split}.txt").write_text("\n".join(lines) + "\n")
    csv = _series_csv(root / "series.csv")
    speech = root / "speech"
    tone_corpus(speech)
    toy = ["--data", "toy", "--data-dir", str(text)]
    # The convolutional LMs' windows and columns (Bai et al.'s 32) cut to the toy corpus.
    conv = [*toy, "--seq-len", "16", "--context-len", "4", "--batch-size", "8"]
    return {
        "rnn": ["--data", str(npz)],
        "rnn-nade": ["--model", "rnn-nade", "--data", str(npz)],
        "vrnn": ["--model", "vrnn", "--data", str(npz)],
        "rnn-rbm": ["--model", "rnn-rbm", "--data", str(npz)],
        "tcn": ["--model", "tcn", "--data", str(npz)],
        "gcnn": ["--model", "gcnn", "--data", str(npz)],
        # The task's size options describe its data (short sequences, few of them).
        "task": ["--data", "adding", "--seq-len", "10", "--train-size", "64", "--test-size", "64"],
        "lm": toy,
        "tcn-lm": ["--model", "tcn-lm", *conv],
        "gcnn-lm": ["--model", "gcnn-lm", *conv],
        "sentence-lm": ["--model", "sentence-lm", *toy],
        "sentence-vae": ["--model", "sentence-vae", *toy],
        "series": ["--data", str(csv)],
        "ctc": ["--data", str(speech), "--hidden-size", "8", "--batch-size", "4"],
    }
