#!/usr/bin/env python3
"""A minimal OpenAI-compatible completions server over HF transformers, for measuring
`conftag-infer --engine openai` on a GPU node that has torch but no vLLM (the lent device).

It batches whatever requests are waiting (up to --max-batch, collected for --window-ms) into
one greedy `generate` call with left padding, and answers each request with its text, finish
reason and token counts. Static batches, not continuous batching: a stand-in for vLLM that
shows what the queue costs around a batching engine, not a production server.

usage: hf_server.py MODEL_DIR [--port 8000] [--served-name NAME] [--max-batch 256] [--window-ms 30]
"""
import argparse, json, queue, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--port", type=int, default=8000)
ap.add_argument("--served-name", default=None)
ap.add_argument("--max-batch", type=int, default=256)
ap.add_argument("--window-ms", type=float, default=30)
args = ap.parse_args()
name = args.served_name or args.model

tok = PreTrainedTokenizerFast.from_pretrained(args.model)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16).cuda().eval()
eos = model.config.eos_token_id
pending = queue.Queue()
stats = {"batches": 0, "requests": 0, "max_batch": 0}


class Job:
    def __init__(self, prompt, max_tokens):
        self.prompt, self.max_tokens = prompt, max_tokens
        self.done = threading.Event()
        self.result = None


def batcher():
    while True:
        batch = [pending.get()]
        deadline = time.time() + args.window_ms / 1000
        while len(batch) < args.max_batch:
            left = deadline - time.time()
            if left <= 0:
                break
            try:
                batch.append(pending.get(timeout=left))
            except queue.Empty:
                break
        stats["batches"] += 1
        stats["requests"] += len(batch)
        stats["max_batch"] = max(stats["max_batch"], len(batch))
        try:
            enc = tok([j.prompt for j in batch], return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
            n = max(j.max_tokens for j in batch)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
            width = enc["input_ids"].shape[1]
            for i, j in enumerate(batch):
                ids = out[i, width:].tolist()[: j.max_tokens]
                finish = "length"
                if eos in ids:
                    ids = ids[: ids.index(eos)]
                    finish = "stop"
                j.result = {"text": tok.decode(ids, skip_special_tokens=True), "finish": finish,
                            "prompt_tokens": int(enc["attention_mask"][i].sum()), "completion_tokens": len(ids)}
        except Exception as e:  # answer every waiting request rather than hang it
            for j in batch:
                j.result = {"error": str(e)}
        for j in batch:
            j.done.set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
        elif self.path.endswith("/stats"):
            self.send(200, stats)
        else:
            self.send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if not self.path.rstrip("/").endswith("/completions") or "chat" in self.path:
            return self.send(404, {"error": {"message": f"only /v1/completions here, not {self.path}"}})
        j = Job(body.get("prompt", ""), int(body.get("max_tokens", 16)))
        pending.put(j)
        j.done.wait()
        r = j.result
        if "error" in r:
            return self.send(500, {"error": {"message": r["error"]}})
        self.send(200, {"object": "text_completion", "model": name,
                        "choices": [{"index": 0, "text": r["text"], "finish_reason": r["finish"]}],
                        "usage": {"prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
                                  "total_tokens": r["prompt_tokens"] + r["completion_tokens"]}})


threading.Thread(target=batcher, daemon=True).start()
print(f"serving {name} on :{args.port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
