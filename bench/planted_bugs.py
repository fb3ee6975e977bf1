"""Do the tests catch the bugs they are about? Plants each bug in the work tree, runs the tests that
should catch it, and restores the file (issue 30's audit, kept so that it can be rerun).

    python bench/planted_bugs.py            # every bug; a row "rc 0" is a test that did not catch it

Each row: the bug, the file and the replaced text, pytest's exit code and the tests that failed. It edits
files in place for the length of one pytest run: do not run it beside other work in the same tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUGS = [
    (
        "DDP wrapping removed",
        "multiscale_transformer/training/trainer.py",
        "loss_module = DistributedDataParallel(loss_module)",
        "pass  # planted: no DDP",
        ["tests/test_ddp.py"],
    ),
    (
        "gradients summed over ranks instead of averaged",
        "multiscale_transformer/training/trainer.py",
        "(loss / len(batches)).backward()",
        "(loss / len(batches) * self.dist.world_size).backward()",
        ["tests/test_ddp.py"],
    ),
    (
        "RMSNorm epsilon 1e-6 for 1e-5 in the export",
        "multiscale_transformer/export/gguf.py",
        "writer.add_layer_norm_rms_eps(cfg.norm_eps)",
        "writer.add_layer_norm_rms_eps(cfg.norm_eps / 10)",
        [
            "tests/test_gguf.py::test_f32_file_reads_back_exactly",
            "tests/test_gguf_llama.py::test_logits_match_our_fine_path",
        ],
    ),
    (
        "chat logprobs shifted by -1",
        "multiscale_transformer/serving/chat_completions.py",
        "logprob=r.logprob,",
        "logprob=r.logprob - 1,",
        ["tests/test_serve_clients.py::test_chat_logprobs_are_the_models"],
    ),
    (
        "every FIM hole counted as matched",
        "multiscale_transformer/evaluation/infilling.py",
        "s.exact_prefix += _greedy_prefix_only(model, hole) == hole.middle",
        "s.exact_prefix += 1",
        ["tests/test_eval_fim.py"],
    ),
    (
        "every FIM hole counted as matched (with the suffix)",
        "multiscale_transformer/evaluation/infilling.py",
        's.exact_fim += text.split(b"\\n")[0] == hole.middle',
        "s.exact_fim += 1",
        ["tests/test_eval_fim.py"],
    ),
    (
        "error body without type",
        "multiscale_transformer/serving/errors.py",
        '"type": TYPES.get(status, "invalid_request_error"), ',
        "",
        [
            "tests/test_serve_tools.py::test_bad_requests_are_openai_shaped_400s",
            "tests/test_serve_fim.py::test_bad_editor_requests_are_400",
            "tests/test_serve_errors.py::test_bad_completion_requests_are_400",
        ],
    ),
    (
        "llama.cpp dies of SIGSEGV while decoding (simulated)",
        "tests/test_gguf_llama.py",
        "    llm = load_llama(path, CTX, threads=2, f32_cache=f32_cache)\n",
        "    __import__('ctypes').string_at(0)\n    llm = load_llama(path, CTX, threads=2, f32_cache=f32_cache)\n",
        ["tests/test_gguf_llama.py"],
    ),
]


def main() -> None:
    for name, rel, old, new, tests in BUGS:
        path = ROOT / rel
        text = path.read_text()
        assert text.count(old) == 1, (name, rel)
        path.write_text(text.replace(old, new))
        try:
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        finally:
            path.write_text(text)
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        print(f"## {name}: {rel}: {old!r} -> {new!r}\nrc {done.returncode}", *failed[:5], sep="\n", flush=True)


if __name__ == "__main__":
    main()
