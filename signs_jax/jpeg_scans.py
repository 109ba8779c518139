"""Whether a progressive JPEG holds every scan its image needs.

A progressive JPEG draws the whole image coarsely in its first scans and refines it in later ones. Cut short
and closed again (an interrupted download or copy), it still decodes to a whole image: blurred, or without
colour, with no error from Pillow and none of the flat grey a cut baseline JPEG leaves. The scan headers
say what each scan refines (components, a band of the 64 coefficients, the bit it brings them to); a whole
image has, for every component, each coefficient brought to its last bit. (A cut inside the last scan
leaves the headers complete: only the entropy-coded data shows it, which Pillow decodes without a word.)
"""

from typing import Dict, Iterator, Optional, Set, Tuple

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
PROGRESSIVE_FRAMES = {0xC2, 0xC6, 0xCA, 0xCE}
FRAMES = {0xC0, 0xC1, 0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCF} | PROGRESSIVE_FRAMES
STANDALONE = {SOI, 0x01} | set(range(0xD0, 0xD8))  # markers without a length (restart markers included)


def _segments(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """(marker, payload) of each segment up to EOI or the end of the data, skipping entropy-coded data."""
    i = 2  # after SOI
    while i + 1 < len(data):
        if data[i] != 0xFF:  # entropy-coded data, where a marker is 0xFF followed by neither 0x00 (a stuffed
            i = data.find(b"\xff", i)  # byte) nor a restart marker
            if i < 0:
                return
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x00 or marker in STANDALONE:
            i += 2
            continue
        if marker == EOI:
            return
        if i + 4 > len(data):
            return
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        yield marker, data[i + 4 : i + 2 + length]
        i += 2 + length


def missing_refinement(data: bytes) -> Optional[str]:
    """What a progressive JPEG's scans leave unfinished (None when the image is whole, or not progressive)."""
    if data[:2] != b"\xff\xd8":
        return None
    components: Tuple[int, ...] = ()
    progressive = False
    finished: Dict[int, Set[int]] = {}
    for marker, payload in _segments(data):
        if marker in FRAMES and len(payload) >= 6:
            progressive = marker in PROGRESSIVE_FRAMES
            count = payload[5]
            components = tuple(payload[6 + 3 * k] for k in range(count) if 6 + 3 * k < len(payload))
            finished = {c: set() for c in components}
        elif marker == SOS and progressive and payload:
            count = payload[0]
            scan = [payload[1 + 2 * k] for k in range(count)]
            tail = payload[1 + 2 * count : 4 + 2 * count]
            if len(tail) < 3:
                continue
            first, last, successive_low = tail[0], tail[1], tail[2] & 0x0F
            if successive_low == 0:  # this scan brings coefficients first..last to their last bit
                for c in scan:
                    finished.setdefault(c, set()).update(range(first, last + 1))
    if not progressive:
        return None
    unfinished = [c for c in components if len(finished.get(c, ())) < 64]
    if not unfinished:
        return None
    return f"its scans leave {len(unfinished)} of its {len(components)} components unfinished"
