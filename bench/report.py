"""Markdown tables from a benchmark report (the dict `python -m bench` writes)."""


def _fps(entry):
    return f"{entry['fps']:,.0f}" if entry else "-"


def generation_table(rows):
    lines = ["| clip | decode f/s | MTCNN alone f/s (End2You's method) | generate, full "
             "detection | generate, default | default / MTCNN alone | default / decode | "
             "peak RSS full / default (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        full, fast = r.get("generate_full_k1"), r.get("generate_k1")
        lines.append(
            f"| {r['clip']} | {_fps(r.get('decode'))} | {_fps(r.get('mtcnn'))} | "
            f"{_fps(full)} | {_fps(fast)} | {r.get('generate_k1_vs_mtcnn', 0):.2f} | "
            f"{r.get('generate_k1_vs_decode', 0):.2f} | "
            f"{full['peak_rss_mb'] if full else 0:,.0f} / "
            f"{fast['peak_rss_mb'] if fast else 0:,.0f} |")
    return "\n".join(lines)


def memory_table(rows):
    lines = ["| clip looped | frames | generate (default detector) f/s | --detect-every | "
             "peak RSS (MB) |", "| ---: | ---: | ---: | ---: | ---: |"]
    # runs before 2026-12-03 11:00 UTC looped with --detect-every 3 and did not record it
    lines += [f"| {r['repeats']}x | {r['frames']} | {r['fps']:,.0f} | "
              f"{r.get('detect_every', 3)} | {r['peak_rss_mb']:,.0f} |" for r in rows]
    return "\n".join(lines)


def ratio_table(title, result):
    keys = [k for k, v in result.items() if isinstance(v, (int, float, str))]
    return "\n".join([f"| {title} | value |", "| --- | ---: |"] +
                     [f"| {k} | {result[k]:,.3g} |" if not isinstance(result[k], str)
                      else f"| {k} | {result[k]} |" for k in keys])


def markdown(report):
    m = report["machine"]
    parts = [f"Command: `{report['command']}`; {m['date']}; {m['platform']}, "
             f"{m['cpus']} CPUs, torch {m['torch']}, GPU: {m['gpu'] or 'none'}."]
    if "generation" in report:
        parts += ["### Generation", generation_table(report["generation"])]
    if "generation_memory" in report:
        parts += ["### Generation memory against video length",
                  memory_table(report["generation_memory"])]
    if report.get("people"):
        parts += ["### Every person (`--faces all`) against MTCNN alone",
                  people_table(report["people"])]
    for key in ("training", "inference"):
        if key in report:
            parts += [f"### {key.capitalize()}", ratio_table(key, report[key])]
    if "fusion" in report:
        parts += ["### Audiovisual against visual training", fusion_table(report["fusion"])]
    return "\n\n".join(parts) + "\n"


def people_table(rows):
    """``--faces all`` per clip: frames/s of MTCNN alone, of the people
    tracker and of `generate --faces all`, people kept, mean frames each."""
    out = ["| clip | MTCNN alone f/s | people tracker f/s (x) | generate --faces all f/s (x) | "
           "people kept | mean frames each | whole-frame searches |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        p = r["people"]
        out.append(f"| {r['clip']} | {r['mtcnn']['fps']:.1f} | {p['fps']:.1f} "
                   f"({r['people_vs_mtcnn']:.1f}x) | {r['generate_people']['fps']:.1f} "
                   f"({r['generate_people_vs_mtcnn']:.1f}x) | {p['people']} | "
                   f"{p['mean_track_frames']:.0f} of {p['frames']} | {p['full_detections']} |")
    return "\n".join(out)


def fusion_table(result):
    """Training frames/s by modality (same CNN, window, batch), and the ratio."""
    rows = ["| modality | train frames/s | vs visual |", "| --- | --- | --- |"]
    visual = result["visual"]["train_fps"]
    for modality in ("visual", "audiovisual", "audio"):
        fps = result[modality]["train_fps"]
        rows.append(f"| {modality} | {fps:.1f} | {fps / visual:.2f} |")
    return "\n".join(rows)
