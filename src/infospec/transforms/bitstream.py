"""The range-coded bitstream of a fitted :class:`~infospec.transforms.TransformCoder`.

:meth:`~_Bitstream.encode` range codes each kept component's symbols (the
``constriction`` package) under a quantized Gaussian or Laplace model of its variance,
behind a 17-byte header; :meth:`~_Bitstream.decode` reads it back and refuses any stream
whose words do not hold exactly what its header declares. A mixin of the coder: the
methods read the fitted attributes (``eigenvalues_``, ``step_``, ``max_symbols_``,
``n_active_``, ``mean_``, ``components_``) and the coder's ``quantize``/``dequantize``.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import torch

from .._errors import InputError

__all__: list[str] = []

#: Header of a bitstream (little-endian): magic ``b"ISTC"``, format version (one byte),
#: number of vectors ``n`` and number of components ``k`` (uint32 each), then (from
#: version 2) a CRC-32 (uint32). Version 3, the one :meth:`TransformCoder.encode` writes,
#: has the CRC cover the first 13 header bytes (magic, version, ``n``, ``k``) and the coded
#: words; version 2 covered the coded words only, and version 1 (a 13-byte header) had
#: none. Both still decode. A range decoder reads any words it is given (and zeros past
#: their end), so the CRC and the checks of :meth:`TransformCoder.decode` (``n`` within
#: what the words can hold, the words used up exactly) make a truncated, extended,
#: corrupted or forged stream an error instead of other vectors.
_MAGIC = b"ISTC"
_VERSION = 3
_VERSIONS = (1, 2, 3)
_HEADER_V1 = struct.Struct("<4sBII")
_HEADER = struct.Struct("<4sBIII")
#: Bits of slack in the payload bound of ``decode``: the range coder's 64-bit state and its
#: final word (the coded words may fall short of the symbols' information by that much).
_STATE_BITS = 128
#: Margin added to a model's largest symbol probability (constriction's 24-bit fixed point
#: moves a probability by at most 2^-23), so that the bound on bits per vector stays a
#: lower bound.
_PROBABILITY_MARGIN = 2.0**-20

#: Largest clip range the bitstream codes: constriction's models spend at least 2^-24 of
#: probability on each symbol of the range, so a range of 2^20 symbols wastes at most 1/8 of
#: a bit per symbol.
_MAX_CODED_SYMBOL = 2**19


def _constriction():
    """The ``constriction`` package (the range coder), or an ImportError saying how to get it."""
    try:
        import constriction
    except ImportError as exc:  # pragma: no cover - constriction is in the test extra
        raise ImportError(
            "TransformCoder.encode/decode need the 'constriction' package (range coding): "
            "pip install 'infospec[compress]'."
        ) from exc
    return constriction


class _Bitstream:
    """The bitstream methods of :class:`~infospec.transforms.TransformCoder` (a mixin)."""

    def _highest_coded_rate(self) -> float:
        """Gaussian rate (bits per vector) at which the widest clip range is 2^19 symbols."""
        lam = self.eigenvalues_
        step = self.clip_sigmas * float(lam[0].sqrt()) / (_MAX_CODED_SYMBOL - 1)
        theta = step * step / 12.0
        rate = float((0.5 * torch.log2(lam[lam > theta] / theta)).sum())
        return math.floor(rate * 1000) / 1000  # rounded down: the quoted rate can be coded

    def _models(self, func: str):
        if self.n_active_ and int(self.max_symbols_[0]) > _MAX_CODED_SYMBOL:
            raise InputError(
                f"{func}: at this operating point the first component's symbols span "
                f"+-{int(self.max_symbols_[0])}; the range coder codes at most +-2^19. Pass a "
                f"rate of at most {self._highest_coded_rate():g} bits per vector (coder.at("
                f"rate=...)) or a smaller clip_sigmas; quantize() and dequantize() work at "
                f"this rate."
            )
        constriction = _constriction()
        family = (
            constriction.stream.model.QuantizedGaussian
            if self.model == "gaussian"
            else constriction.stream.model.QuantizedLaplace
        )
        return [family(-m, m, 0.0, spread) for m, spread in self._spreads()]

    def _spreads(self) -> list[tuple[int, float]]:
        """Clip range and model parameter (Gaussian std, Laplace scale) of each kept component."""
        sigma = (self.eigenvalues_[: self.n_active_].sqrt() / self.step_).tolist()
        out = []
        for i, m in enumerate(self.max_symbols_.tolist()):
            # Laplace of the same variance: scale b = sigma / sqrt(2)
            spread = sigma[i] if self.model == "gaussian" else sigma[i] / math.sqrt(2.0)
            out.append((int(m), max(spread, 1e-3)))
        return out

    def _min_bits_per_vector(self) -> float:
        r"""A lower bound on the bits the range coder spends on one vector.

        The sum over kept components of :math:`-\log_2 p_{\max}`, the largest probability
        the component's model gives a symbol: the centre bin (of the model renormalized
        to the clip range, the larger reading) or an edge bin, which holds the tail
        beyond it, plus :data:`_PROBABILITY_MARGIN` for the fixed-point rounding. No
        sequence of ``n`` vectors codes into fewer than ``n`` times this many bits, less
        the coder's state (:data:`_STATE_BITS`).
        """
        total = 0.0
        for m, spread in self._spreads():
            if self.model == "gaussian":
                a = math.sqrt(2.0) * spread
                centre = math.erf(0.5 / a) / math.erf((m + 0.5) / a)
                edge = 0.5 * math.erfc((m - 0.5) / a)
            else:
                centre = -math.expm1(-0.5 / spread) / -math.expm1(-(m + 0.5) / spread)
                edge = 0.5 * math.exp(-(m - 0.5) / spread)
            p = max(centre, edge) + _PROBABILITY_MARGIN
            if p < 1.0:
                total -= math.log2(p)
        return total

    def encode(self, X: Any) -> bytes:
        """Code vectors into bytes: a 17-byte header, then the range-coded symbols.

        The header (version 3, little-endian) is the magic ``b"ISTC"``, the version byte
        3, the number of vectors ``n`` and of kept components ``k`` (uint32 each) and the
        CRC-32 (uint32) of the header's first 13 bytes followed by the coded words; the
        coded words (uint32, little-endian) follow. Components are coded one after another
        (all vectors' symbols of the first kept component, then the second...), each under
        its own quantized model. ``len(data) * 8 / n`` is the operational rate in bits per
        vector, header included.

        Raises
        ------
        InputError
            If the coder is not fitted, ``X`` is not a finite (n, d) array of the fitted
            width, it holds more than 2^32 - 1 vectors, or the operating point needs a clip
            range above 2^19 symbols (the message gives the highest rate it can code).
        """
        constriction = _constriction()
        q = self.quantize(X)
        n = q.shape[0]
        if n >= 2**32:
            raise InputError("TransformCoder.encode codes at most 2^32 - 1 vectors at once.")
        models = self._models("TransformCoder.encode")
        encoder = constriction.stream.queue.RangeEncoder()
        for j, model in enumerate(models):
            encoder.encode(q[:, j].numpy().astype(np.int32), model)
        payload = encoder.get_compressed().astype("<u4").tobytes()
        head = _HEADER_V1.pack(_MAGIC, _VERSION, n, self.n_active_)
        return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload

    def decode(self, data: bytes) -> torch.Tensor:
        """Vectors from :meth:`encode`'s bytes: exactly ``dequantize(quantize(X))``, shape (n, d).

        Streams of versions 1 and 2 (written by earlier releases) decode too. Every stream
        must pass, beside its CRC-32 (version 3: header and coded words; version 2: the
        coded words), three checks that a forged or damaged header cannot dodge: ``n`` at
        least 1 and at most what the coded words can hold at this coder's models (checked
        before any output is allocated), the range decoder used up after exactly ``n``
        vectors, and the decoded symbols coding back into exactly the given words.

        Raises
        ------
        InputError
            If the coder is not fitted, or ``data`` is not a bitstream of this coder (wrong
            magic, version or number of components, a failed CRC-32, truncated, or holding
            more or less data than its header declares).
        """
        constriction = _constriction()
        self._check_fitted("decode")
        func = "TransformCoder.decode"
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(
                f"The 'data' argument of {func} must be bytes from encode(); got "
                f"{type(data).__name__}."
            )
        data = bytes(data)
        if len(data) < _HEADER_V1.size:
            raise InputError(
                f"The 'data' argument of {func} is {len(data)} bytes long: not a bitstream "
                f"of TransformCoder.encode (a header of at least {_HEADER_V1.size} bytes)."
            )
        version = data[4] if data[:4] == _MAGIC else None
        header = _HEADER_V1 if version == 1 else _HEADER
        if version not in _VERSIONS:
            raise InputError(
                f"The 'data' argument of {func} does not start with the TransformCoder header "
                f"(magic {_MAGIC!r}, version 1, 2 or {_VERSION}); it was not made by encode()."
            )
        if len(data) < header.size or (len(data) - header.size) % 4:
            raise InputError(
                f"The 'data' argument of {func} is {len(data)} bytes long: not a bitstream "
                f"of TransformCoder.encode (a {header.size}-byte header and 32-bit words); "
                f"it is truncated or corrupt."
            )
        _magic, _version, n, k, *crc = header.unpack_from(data)
        payload = data[header.size :]
        if crc:
            start = zlib.crc32(data[: _HEADER_V1.size]) if version >= 3 else 0
            if zlib.crc32(payload, start) != crc[0]:
                covered = "its header and its" if version >= 3 else "its"
                raise InputError(
                    f"The bitstream given to {func} fails its CRC-32 check: it is truncated, "
                    f"extended or corrupt ({covered} {len(payload)} bytes of coded words are "
                    f"not those encode() wrote)."
                )
        if k != self.n_active_:
            raise InputError(
                f"The bitstream given to {func} codes {k} components; this coder keeps "
                f"{self.n_active_}. Decode with the coder (and operating point) that encoded it."
            )
        models = self._models(func)
        damaged = (
            f"The bitstream given to {func} holds more or less data than its header declares "
            f"({n} vectors of {k} components): it is damaged or not this coder's."
        )
        if n == 0:
            raise InputError(damaged)
        bits = self._min_bits_per_vector()
        if bits > 0:
            # a lower bound of 1/2 the true one: no genuine stream comes near the limit
            most = math.floor((8 * len(payload) + _STATE_BITS) / (0.5 * bits))
            if n > most:
                raise InputError(
                    f"The bitstream given to {func} claims {n} vectors, but its "
                    f"{len(payload)} bytes of coded words hold at most {most} vectors of this "
                    f"coder (each takes at least {bits:.3g} bits): it is damaged or not this "
                    f"coder's."
                )
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        q = np.empty((k, n), dtype=np.int32)
        try:
            for j, model in enumerate(models):
                q[j] = decoder.decode(model, n)
        except Exception as exc:  # constriction reports a corrupt stream as a plain error
            raise InputError(
                f"{func}: the bitstream is truncated or corrupt, or holds more or less data "
                f"than its header declares ({exc})."
            ) from exc
        if not decoder.maybe_exhausted():
            raise InputError(damaged)
        # the decoder reads zeros past the last word, so a header claiming more vectors can
        # still end exhausted: the symbols must code back into exactly the given words
        encoder = constriction.stream.queue.RangeEncoder()
        for j, model in enumerate(models):
            encoder.encode(q[j], model)
        if encoder.get_compressed().astype("<u4").tobytes() != payload:
            raise InputError(damaged)
        symbols = torch.from_numpy(q.T.astype(np.int64))
        try:
            return self.dequantize(symbols)
        except (RuntimeError, MemoryError):  # k = 0: n vectors of no symbol, all the mean
            raise InputError(
                f"The bitstream given to {func} claims {n} vectors of {self.mean_.numel()} "
                f"coordinates, more than this machine can hold; it is corrupt or was not "
                f"made by encode()."
            ) from None
