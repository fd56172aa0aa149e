"""``docs/bench.md``: the benchmark JSON as tables, rewritten by every ``python -m bench`` run.

The docs link to this page rather than quote numbers by hand, so every figure in
them is one the benchmark measured, on the machine named at the top of each section.
"""

from __future__ import annotations

from typing import Any


def _machine(section: dict[str, Any]) -> str:
    m = section.get("machine", {})
    facts = ", ".join(f"{k} {v}" for k, v in m.items())
    return f"Measured on: {facts}; {section.get('wall_s', '?')} s." if facts else ""


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def samplers(section: dict[str, Any]) -> list[str]:
    lines = ["## Digit samplers (`--sections samplers`)", "", _machine(section), "",
             "Ten digits (one of each label) per run; accuracy and MS-SSIM come from the model card's sampler sweep "
             "(the seed and the images per digit they were measured on are in the last column).", "",
             "| configuration | sampler-steps | guidance | interval | NFE | s / 10 digits | speed-up vs DDIM-25 | accuracy | MS-SSIM | measured on |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in section.get("configurations", []):
        interval = "-" if not row["guidance_interval"] else f"[{row['guidance_interval'][0]}, {row['guidance_interval'][1]}]"
        source = f"seed {row['accuracy_seed']}, {row['accuracy_images_per_digit']} per digit" if row.get("accuracy_seed") is not None else "-"
        lines.append(f"| {row['name']} | {row['sampler']}-{row['steps'] or 400} | {row['guidance_scale']:g} | {interval} | {row['nfe']} "
                     f"| {row['s_per_10_digits']:.2f} | {row['speedup_vs_ddim25']:.2f}x | {_num(row.get('accuracy'))} | {_num(row.get('msssim'))} | {source} |")
    fast = section.get("cpu_fast_path")
    if fast:
        lines += ["", f"CPU fast path: {fast['what']}, {fast['threads']} threads; bf16 instructions on this CPU: "
                  f"{'yes' if fast['bf16_cpu_support'] else 'no'} (bf16 autocast changes the noise prediction by up to "
                  f"{fast['bf16_max_abs_error_of_noise_prediction']})." + (f" torch.compile took {fast['compile_s']} s." if "compile_s" in fast else ""),
                  "", "| change | ms | speed-up |", "|---|---|---|"]
        lines += [f"| {r['change']} | {r['ms']:.1f} | {r['speedup']:.2f}x |" for r in fast["rows"]]
    return lines


def service(section: dict[str, Any]) -> list[str]:
    lines = ["## Service (`--sections service`)", "", _machine(section), "",
             "Latency at one client, the service against the same model call in this process (ms):", "",
             "| request | service p50 | service p95 | in-process p50 | in-process p95 | p50 ratio |", "|---|---|---|---|---|---|"]
    for name, row in section.get("latency", {}).items():
        lines.append(f"| {name} | {_num(row.get('p50_ms'), '{:.1f}')} | {_num(row.get('p95_ms'), '{:.1f}')} | "
                     f"{_num(row.get('in_process_p50_ms'), '{:.1f}')} | {_num(row.get('in_process_p95_ms'), '{:.1f}')} | {_num(row.get('ratio_p50'), '{:.2f}')} |")
    for name, table in section.get("throughput", {}).items():
        lines += ["", f"Throughput, {name} (requests/s), with and without micro-batching:", "",
                  "| clients | batched | unbatched | ratio | mean batch (requests) |", "|---|---|---|---|---|"]
        for clients, row in table.get("batched", {}).items():
            plain = table.get("unbatched", {}).get(clients, {})
            lines.append(f"| {clients} | {row['rps']:.1f} | {_num(plain.get('rps'), '{:.1f}')} | "
                         f"{_num(table.get('ratio_batched_over_unbatched', {}).get(clients), '{:.2f}')} | {_num(row.get('mean_batch_requests'), '{:.1f}')} |")
    ceiling = section.get("batching_ceiling")
    if ceiling:
        lines += ["", "The most micro-batching can gain on this machine: the model call of one request alone against "
                  "its share of one call for many requests, in-process with the small worker's "
                  f"{ceiling['torch_threads']} torch threads. Were HTTP, Redis, Celery, the PNG files and the clients "
                  "free, the throughput ratio above would reach this ceiling; it stays below.", "",
                  "| request | requests per call | ms alone | ms per request, shared | ceiling |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {r['requests_per_call']} | {_num(r['ms_alone'], '{:.2f}')} | "
                  f"{_num(r['ms_per_request_shared'], '{:.2f}')} | {r['ceiling_ratio']:.2f}x |"
                  for name, r in ceiling["rows"].items()]
    return lines


def memory(section: dict[str, Any]) -> list[str]:
    config = section.get("config", {})
    raised = config.get("limits_raised") or {}
    lines = ["## Memory (`--sections memory`)", "", _machine(section), "",
             f"One `POST /classify/target-domain` of {config.get('images')} PNGs of {config.get('side')}x{config.get('side')} "
             f"pixels ({config.get('inputs')}; {config.get('body_mib')} MiB on the wire"
             + (f"; limits raised for this run: {', '.join(f'{k}={v}' for k, v in raised.items())}" if raised else "")
             + "). Peak resident memory (`VmHWM`) of each process after start-up and a one-image request, and after "
             "the large request; private memory (`RssAnon`: the heap, not the shared libraries) before, and its "
             f"peak sampled during the request. The target is a peak below {config.get('target_mb')} MB.", "",
             "| process | peak before (MB) | peak after (MB) | resident after (MB) | private before (MB) | private peak (MB) | peak below target |",
             "|---|---|---|---|---|---|---|"]
    for name, label in (("api", "API (uvicorn)"), ("worker", "small-model worker")):
        row = section.get(name)
        if row:
            lines.append(f"| {label} | {row['peak_before_mb']:.1f} | {row['peak_after_mb']:.1f} | {row['rss_after_mb']:.1f} | "
                         f"{_num(row.get('private_before_mb'), '{:.1f}')} | {_num(row.get('private_peak_mb'), '{:.1f}')} | "
                         f"{'yes' if row['below_target'] else 'no'} |")
    if section.get("torch_import_mb") is not None:
        lines += ["", f"A Python process that only imports torch and torchvision peaks at {section['torch_import_mb']:.1f} MB "
                  "here: the floor of any worker's peak."]
    request = section.get("request")
    if request:
        lines += ["", f"The request took {request['seconds']:.1f} s. Its labels agree for "
                  f"{request['labels_agree_with_whole_decode']} images with a request of the 28x28 inputs that decoding "
                  f"each PNG whole gives; those differ from the API's by at most {config.get('max_abs_diff_vs_whole_decode')}/255 a pixel."]
    return lines


def load(section: dict[str, Any]) -> list[str]:
    config = section.get("config", {})
    intro = (f"{config.get('requests')} requests at each number of concurrent clients (closed loop), a seeded "
             f"mix of POST /generate/faces (n = {config.get('faces_n')}), POST /classify/target-domain "
             f"({config.get('classify_images')}) and GET /jobs/{{id}} polls; POSTs wait at most {config.get('wait_s')} s. "
             "Afterwards every job a 200/202 accepted is polled to its end. Errors: any answer but 200, 202 and 429 "
             "with Retry-After, plus accepted jobs that failed or did not finish.")
    lines = ["## Load (`--sections load`)", "", _machine(section), "", intro, "",
             "| clients | req/s | kind | status codes | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for clients, row in section.get("levels", {}).items():
        for kind, counts in row.get("status_counts", {}).items():
            latency = row.get("latency", {}).get(kind, {})
            shown = ", ".join(f"{code}: {n}" for code, n in counts.items()) or "-"
            lines.append(f"| {clients} | {row['rps']:.1f} | {kind} | {shown} | {_num(latency.get('p50_ms'), '{:.1f}')} "
                         f"| {_num(latency.get('p95_ms'), '{:.1f}')} |")
    lines += ["", "| clients | jobs accepted | succeeded | failed | unfinished | 429 with Retry-After | errors |",
              "|---|---|---|---|---|---|---|"]
    for clients, row in section.get("levels", {}).items():
        jobs = row.get("jobs", {})
        lines.append(f"| {clients} | {jobs.get('accepted')} | {jobs.get('succeeded')} | {jobs.get('failed')} | "
                     f"{jobs.get('unfinished')} | {row.get('refused_429_with_retry_after')} | {row.get('errors')} |")
    if streams := section.get("streams"):
        ends = ", ".join(f"{end}: {n}" for end, n in streams.get("ends", {}).items())
        lines += ["", f"{streams['streams']} event streams (`GET /jobs/{{id}}/events`) opened at once on one digit "
                  f"job: {streams['ended_with_done']} ended with `done` ({ends}), in {streams['seconds']} s."]
    return lines


def _speed_table(rows: list[dict], extra: str = "") -> list[str]:
    head = "| engine, precision | ms | speed-up |" + (f" {extra} |" if extra else "")
    lines = [head, "|---|---|---|" + ("---|" if extra else "")]
    for r in rows:
        tail = f" {_num(r.get(extra.replace(' ', '_')), '{}')} |" if extra else ""
        lines.append(f"| {r['name']} | {r['ms']:.1f} | {r['speedup']:.2f}x |{tail}")
    return lines


def runtime(section: dict[str, Any]) -> list[str]:
    lines = ["## Digit runtimes (`--sections runtime`)", "", _machine(section), "",
             f"{section.get('threads')} torch threads; bf16 instructions on this CPU: "
             f"{'yes' if section.get('cpu_has_bf16') else 'no'}. Each engine and precision in turns; speed-ups are "
             "against eager PyTorch fp32.", ""]
    step = section.get("unet_step")
    if step:
        lines += [f"{step['what']}:", "", *_speed_table(step["rows"], "max abs diff"), ""]
    digits = section.get("ten_digits_in_process")
    if digits:
        lines += ["Ten digits in this process, the guided default and the distilled student (speed-up against the "
                  "guided default in eager PyTorch):", "", *_speed_table(digits["rows"], "nfe"), ""]
    service = section.get("service")
    if service:
        lines += [f"`{service['request']}` through the service, two stacks asked in turns:", "",
                  "| stack | sampler | NFE | engine | p50 (s) | p95 (s) |", "|---|---|---|---|---|---|"]
        for name, r in service["rows"].items():
            lines.append(f"| {name} | {r['sampler']}-{r['steps']} g{r['guidance']:g} | {r['nfe']} | "
                         f"{r['engine']} {r['precision']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} |")
        lines += ["", f"p50 as served / p50 eager: {service['p50_ratio_served_to_eager']:.3f}."]
    return lines


def quota(section: dict[str, Any]) -> list[str]:
    config = section.get("config", {})
    return ["## Results quota (`--sections quota`)", "", _machine(section), "",
            f"{config.get('jobs')} face jobs of n = {config.get('faces_n')} from {config.get('clients')} clients, "
            f"`RESULTS_MAX_BYTES` = {config.get('quota_bytes')} bytes; the results folder sampled every "
            f"{config.get('sample_s')} s: at most {section.get('peak_bytes')} bytes "
            f"({section.get('peak_over_quota')}x the quota), {section.get('final_bytes')} at the end. "
            f"How the jobs ended: {section.get('job_ends')}."]  # fmt: skip


RENDERERS = {"samplers": samplers, "runtime": runtime, "service": service, "memory": memory, "load": load,
             "quota": quota}  # fmt: skip


def render(results: dict[str, Any]) -> str:
    lines = ["# Benchmarks", "", "Written by `python -m bench` (`make bench`) from `docs/bench.json`; do not edit by hand.", ""]
    for name, section in results.items():
        if name in RENDERERS:
            lines += [*RENDERERS[name](section), ""]
    return "\n".join(lines).rstrip() + "\n"
