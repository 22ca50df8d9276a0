"""eSpeak NG through ctypes: the library and voice data of the espeakng-loader wheel, driven in synchronous mode
(no audio device), and `speak`, one word as a clip. The embedded spoken digits are made with it."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np
import torch

from djepa.modalities.waveform import peak_normalize, trim_silence
from djepa.tokenizers.mel import fit_length

# English accents shipped in espeakng-loader's data (lang/gmw), as espeak_SetVoiceByName knows them.
ESPEAK_ACCENTS = [
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-029",
    "en-gb-scotland",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
]
# Voice variants (voices/!v) that stay intelligible; "" is the accent's own voice.
ESPEAK_VARIANTS = [
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Alex",
    "Andy",
    "Annie",
    "adam",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "grandma",
    "grandpa",
    "iven",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "klatt",
]


class _Espeak:
    """libespeak-ng from the espeakng-loader wheel, driven through ctypes in synchronous mode (one process-wide)."""

    _instance: _Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        synchronous = 0x02  # AUDIO_OUTPUT_SYNCHRONOUS: samples arrive through the callback, no audio device
        rate = lib.espeak_Initialize(synchronous, 0, str(self.data_path).encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data {self.data_path}")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, count, _events) -> int:
            if count > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            return 0

        self._callback = callback_type(collect)  # keep a reference: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def variants(self) -> list[str]:
        folder = self.data_path / "voices" / "!v"
        return [v for v in ESPEAK_VARIANTS if not v or (folder / v).is_file()]

    def synth(
        self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> np.ndarray:
        """int16 samples at `self.sample_rate` for `text` in `voice` (accent, optionally `+variant`).

        eSpeak NG draws random numbers for noise and jitter; `seed` makes the output reproducible.
        """
        with self._lock:
            self.lib.espeak_ng_SetRandSeed(int(seed))
            err = self.lib.espeak_SetVoiceByName(voice.encode())
            if err != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r} (error {err})")
            self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE, words per minute
            self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH, 0..100
            self.lib.espeak_SetParameter(4, int(pitch_range), 0)  # espeakRANGE, 0..100
            self._chunks.clear()
            data = text.encode() + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)  # POS_CHARACTER, espeakCHARS_AUTO
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
            self.lib.espeak_Synchronize()
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            self._chunks.clear()
        return samples.astype(np.int16)


def espeak_voices() -> list[str]:
    """Every `accent+variant` voice the embedded default draws from."""
    engine = _Espeak.get()
    return [a + (f"+{v}" if v else "") for a in ESPEAK_ACCENTS for v in engine.variants()]


def speak(
    word: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int = 16000,
    num_samples: int = 16000,
    seed: int = 0,
) -> torch.Tensor:
    """`word` spoken by eSpeak NG: [1, num_samples] at `sample_rate`, silence trimmed, centred, peak-normalised."""
    import torchaudio.functional as AF

    engine = _Espeak.get()
    raw = torch.from_numpy(engine.synth(word, voice, rate, pitch, pitch_range, seed).astype(np.float32) / 32768.0)
    audio = AF.resample(raw[None], engine.sample_rate, sample_rate) if engine.sample_rate != sample_rate else raw[None]
    audio = trim_silence(audio)
    if audio.shape[-1] == 0:
        raise RuntimeError(f"eSpeak NG returned silence for {word!r} in voice {voice!r}")
    return peak_normalize(fit_length(audio, num_samples, "center"))
