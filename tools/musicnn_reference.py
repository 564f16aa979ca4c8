"""Reference outputs of the original musicnn, for the PyTorch port's parity test.

Run it in a side environment, never in dancegenre's own (musicnn pins numpy<1.17 and
needs TensorFlow)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf-keras librosa soundfile
    /tmp/tfenv/bin/pip install --no-deps musicnn-0.1.0-py3-none-any.whl
    /tmp/tfenv/bin/python tools/musicnn_reference.py tests/models/musicnn_reference.npz

It synthesises 9.5 s of audio from a fixed formula (kick, hats, a detuned saw chord
and seeded noise, at 16 kHz so no resampling is involved), cuts it into 3-s patches
with musicnn's own ``batch_data`` (librosa mel, float16, log10(1 + 10000 x)), and runs
the original TF1 graph of ``musicnn.models.define_model`` with the wheel's MSD and MTT
checkpoints on all patches in one batch (the package's ``extractor`` repeats the first
patch's penultimate layer for later patches, so it is not used).  The file holds the
patches and, per model, ``taggram``, ``penultimate``, ``max_pool`` and ``mean_pool``.
"""

import os
import sys
import tempfile

import numpy as np
import soundfile as sf

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs tf-keras, not Keras 3
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()
from musicnn import configuration as config  # noqa: E402
from musicnn import models  # noqa: E402
from musicnn.extractor import batch_data  # noqa: E402

SR = 16000


def audio() -> np.ndarray:
    t = np.arange(int(9.5 * SR)) / SR
    beat = 60 / 132
    phase = (t % beat) / beat
    kick = np.sin(2 * np.pi * (50 + 120 * np.exp(-phase * 30)) * t) * np.exp(-phase * 12)
    hat_phase = ((t + beat / 2) % beat) / beat
    rng = np.random.RandomState(7)
    noise = rng.uniform(-1, 1, len(t))
    hats = noise * np.exp(-hat_phase * 60) * 0.3
    saw = sum(((t * f) % 1.0) * 2 - 1 for f in (220.0, 221.7, 329.6, 392.0)) * 0.08
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * t / 9.5)
    # Quiet enough that the original's float16 mel power does not overflow to inf.
    return (0.6 * kick + hats + saw * swell + 0.01 * noise).astype(np.float32) * 0.1


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reference.wav")
        sf.write(path, audio(), SR, subtype="FLOAT")
        patches, _ = batch_data(path, 187, 187)
    assert np.isfinite(patches).all(), "float16 overflow in the original front end: make the audio quieter"
    result = {"patches": patches.astype(np.float16)}
    here = os.path.dirname(models.__file__)
    for name, folder, n_tags in (("msd", "MSD_musicnn", 50), ("mtt", "MTT_musicnn", 50)):
        tf.compat.v1.reset_default_graph()
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, 187, config.N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            y, *_, mean_pool, max_pool, penultimate = models.define_model(x, is_training, folder, n_tags)
            taggram = tf.nn.sigmoid(y)
        with tf.compat.v1.Session() as sess:
            tf.compat.v1.train.Saver().restore(sess, os.path.join(here, folder) + "/")
            outs = sess.run([taggram, penultimate, max_pool, mean_pool],
                            feed_dict={x: patches.astype(np.float32), is_training: False})
        for key, value in zip(("taggram", "penultimate", "max_pool", "mean_pool"), outs):
            result[f"{name}_{key}"] = np.asarray(value, dtype=np.float32)
            assert np.isfinite(result[f"{name}_{key}"]).all()
    np.savez_compressed(out, **result)
    print({k: v.shape for k, v in result.items()})


if __name__ == "__main__":
    main(sys.argv[1])
