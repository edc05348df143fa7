"""Multi-person videos built at test time with ffmpeg from the shared talking clips (real faces,
real voices): the same person cut away and back, two people side by side taking turns, a two-shot
under a voice from off screen. Each builder returns the path and what is true about it."""
from __future__ import annotations

from pathlib import Path

from conftest import VIDEO, ffmpeg

TALKING = VIDEO / "talking"
A, B, C = TALKING / "Obama_clip1.mp4", TALKING / "KristiNoem.mp4", TALKING / "andrew_clip_1.mp4"
_V = "setpts=PTS-STARTPTS,scale=256:256,setsar=1,fps=25"
_A = "asetpts=PTS-STARTPTS,aresample=16000,aformat=channel_layouts=mono"
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-c:a", "aac")


def cut_away_and_back(folder: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """A (0-5 s), B (5-10 s), A again (10-15 s, a later stretch of A's clip), hard cuts between."""
    out = folder / "aba.mp4"
    if not out.exists():
        ffmpeg("-i", str(A), "-i", str(B), "-filter_complex",
               f"[0:v]trim=0:5,{_V}[v0];[1:v]trim=0:5,{_V}[v1];[0:v]trim=8:13,{_V}[v2];"
               f"[0:a]atrim=0:5,{_A}[a0];[1:a]atrim=0:5,{_A}[a1];[0:a]atrim=8:13,{_A}[a2];"
               "[v0][a0][v1][a1][v2][a2]concat=n=3:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]", *X264, str(out))
    return out, [(0.0, 5.0, "A"), (5.0, 10.0, "B"), (10.0, 15.0, "A")]


def taking_turns(folder: Path, turn_s: float = 6.0, turns: int = 3) -> tuple[Path, list[tuple[float, float, str]]]:
    """A (left) and B (right) side by side, both talking on screen all along, only one heard at a
    time: A's own voice in A's turns, B's in B's (each in sync with its own picture)."""
    out = folder / f"turns_{turn_s:g}x{turns}.mp4"
    total = turn_s * turns
    b_on = "+".join(f"between(t,{k * turn_s},{(k + 1) * turn_s})" for k in range(1, turns, 2))
    if not out.exists():
        ffmpeg("-i", str(A), "-i", str(B), "-filter_complex",
               f"[0:v]{_V}[l];[1:v]{_V}[r];[l][r]hstack[v];"
               f"[0:a]{_A},volume='1-({b_on})':eval=frame[a0];[1:a]{_A},volume='{b_on}':eval=frame[a1];"
               "[a0][a1]amix=inputs=2:normalize=0[a]", "-map", "[v]", "-map", "[a]", "-t", str(total), *X264, str(out))
    return out, [(k * turn_s, (k + 1) * turn_s, "A" if k % 2 == 0 else "B") for k in range(turns)]


def off_screen_voice(folder: Path, seconds: float = 15.0) -> Path:
    """A and B side by side, both talking on screen; the only voice is C's (not on screen)."""
    out = folder / "offscreen.mp4"
    if not out.exists():
        ffmpeg("-i", str(A), "-i", str(B), "-i", str(C), "-filter_complex",
               f"[0:v]{_V}[l];[1:v]{_V}[r];[l][r]hstack[v];[2:a]{_A}[a]", "-map", "[v]", "-map", "[a]",
               "-t", str(seconds), *X264, str(out))
    return out
