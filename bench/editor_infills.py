"""Do infills end where the hole ends? Editor-shaped requests on held-out holes, against `axl serve`.

Hides single lines of held-out files (evaluation/infilling.py's holes) and asks for each as two editors
do: Continue's `openai` provider (StarCoder FIM template in `prompt`, no suffix field, to
`/v1/completions`) and llama.vim (`/infill` with `n_indent` at the cursor line's indentation and
`n_predict` 128), with several seeds. Prints, per client, how many infills ended by themselves (EOS or a
stop rule) before the cap, and how many first lines equal the hidden line.

    python bench/editor_infills.py --data DIR [--model DIR] [--holes 8] [--seeds 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import httpx
from serve import free_port, wait_ready  # bench/serve.py, beside this file

from multiscale_transformer.evaluation.infilling import make_holes
from multiscale_transformer.training.data import Document

BUNDLED = Path(__file__).resolve().parents[1] / "multiscale_transformer" / "pretrained" / "axl-mini"
CONTINUE_STOPS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>", "</fim_middle>",
                  "</code>", "/src/", "#- coding: utf-8", "```"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a directory of held-out .py files")
    parser.add_argument("--model", type=Path, default=BUNDLED)
    parser.add_argument("--holes", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    docs = [Document(str(p), p.read_bytes()) for p in sorted(args.data.rglob("*.py"))]
    holes = [h for h in make_holes(docs, args.holes, 256, seed=1) if h.kind == "line"]
    port = free_port()
    cmd = [sys.executable, "-m", "multiscale_transformer", "serve", "--model", str(args.model), "--port", str(port),
           "--threads", "1", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    counts = {"continue openai": [0, 0, 0], "llama.vim /infill": [0, 0, 0]}  # ended, first line exact, requests
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=120) as http:
            for hole in holes:
                prefix, suffix = hole.prefix.decode(errors="replace"), hole.suffix.decode(errors="replace")
                middle = hole.middle.decode(errors="replace")
                line = prefix[prefix.rfind("\n") + 1 :]
                for seed in range(args.seeds):
                    body = {"prompt": f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>", "max_tokens": 4096,
                            "temperature": 0.01, "stop": CONTINUE_STOPS, "seed": seed}  # fmt: skip
                    choice = http.post("/v1/completions", json=body).json()["choices"][0]
                    tally(counts["continue openai"], choice["finish_reason"] == "stop", choice["text"], middle)
                    body = {"input_prefix": prefix, "input_suffix": suffix, "prompt": "", "n_predict": 128,
                            "n_indent": len(line) - len(line.lstrip()), "top_k": 40, "top_p": 0.90, "seed": seed,
                            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True}  # fmt: skip
                    reply = http.post("/infill", json=body).json()
                    ended = (
                        reply["stop_type"] in ("eos", "word")
                        or reply["tokens_predicted"] < reply["generation_settings"]["n_predict"]
                    )
                    tally(counts["llama.vim /infill"], ended, reply["content"], middle)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for client, (ended, exact, n) in counts.items():
        print(f"{client:18s}: {ended}/{n} ended before the cap, {exact}/{n} first lines exact")


def tally(row: list[int], ended: bool, text: str, middle: str) -> None:
    row[0] += ended
    row[1] += text.split("\n")[0] == middle
    row[2] += 1


if __name__ == "__main__":
    main()
