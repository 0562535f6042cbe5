"""Summary of one shape for kernel_profile.sh: launches, device time and wall time per pass.

Arguments: FEW_LOG MANY_LOG PASSES_BETWEEN BATCH SEQ DTYPE WALL_MS TOP_PATH [NCU_CSV]
FEW_LOG / MANY_LOG: cubecl execution logs ("Executing <kernel>" per launch) of two runs that
differ by PASSES_BETWEEN passes. NCU_CSV: Nsight Compute's CSV (gpu__time_duration.sum per
kernel) of a run whose last 5 passes are the timed ones; empty when ncu is not installed.
"""

import collections
import csv
import json
import sys


def launches(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.startswith("Executing "))


def main():
    few, many, passes, batch, seq, dtype, wall_ms, top_path = sys.argv[1:9]
    ncu_csv = sys.argv[9] if len(sys.argv) > 9 else ""
    per_pass = (launches(many) - launches(few)) / int(passes)
    result = {
        "batch": int(batch),
        "seq": int(seq),
        "dtype": dtype,
        "launches_per_pass": round(per_pass, 1),
        "wall_ms_per_pass": float(wall_ms),
    }
    if ncu_csv:
        with open(ncu_csv, encoding="utf-8", errors="replace") as f:
            # ncu prints its own notes before the table; the table's lines are quoted.
            rows = [r for r in csv.DictReader(line for line in f if line.startswith('"'))
                    if r["Metric Name"] == "gpu__time_duration.sum"]
        timed = rows[-round(per_pass) * 5:]
        by_kernel = collections.defaultdict(lambda: [0, 0.0])
        for r in timed:
            k = by_kernel[r["Kernel Name"][:120]]
            k[0] += 1
            # ncu writes thousands separators ("3,520" ns).
            k[1] += float(r["Metric Value"].replace(",", "")) / 5 / 1e6
        device_ms = sum(ms for _, ms in by_kernel.values())
        with open(top_path, "w", encoding="utf-8") as f:
            f.write(f"per pass, batch {batch} x {seq} tokens, {dtype}: launches, device ms, kernel\n")
            for name, (n, ms) in sorted(by_kernel.items(), key=lambda kv: -kv[1][1]):
                f.write(f"{n / 5:6.1f} {ms:8.4f}  {name}\n")
        result["ncu_kernels_per_pass"] = len(timed) / 5
        result["device_ms_per_pass"] = round(device_ms, 4)
        result["device_share_of_wall"] = round(device_ms / float(wall_ms), 3)
    print(json.dumps({"kernel_profile": result}))


if __name__ == "__main__":
    main()
