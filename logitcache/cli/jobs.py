"""``logitcache jobs status ID | stop ID | logs ID [--follow]``: manage submitted jobs."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray dashboard URL (as for `logitcache submit`)")
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="a job's status; exit code 0 only if it succeeded")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    stop = sub.add_parser("stop", help="stop a running job")
    stop.add_argument("job_id")
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    logs = sub.add_parser("logs", help="print a job's logs")
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="stream until the job ends")


def run(args: argparse.Namespace) -> int:
    from ray.job_submission import JobStatus

    from logitcache.errors import JobError
    from logitcache.jobs import follow, make_client, resolve_address, wait

    client = make_client(resolve_address(args.address))
    job_id = args.job_id
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as exc:
        raise JobError(f"no job {job_id!r} on this cluster ({exc})") from None
    if args.jobs_command == "status":
        summary = {
            "job_id": job_id,
            "status": str(info.status),
            "entrypoint": info.entrypoint,
            "message": info.message,
            "start_time": info.start_time,
            "end_time": info.end_time,
            "driver_exit_code": getattr(info, "driver_exit_code", None),
            "metadata": info.metadata,
        }
        if args.json:
            print(json.dumps(summary))
        else:
            for key, value in summary.items():
                print(f"{key:<16}  {value}")
        if info.status == JobStatus.SUCCEEDED:
            return 0
        return 1 if info.status.is_terminal() else 4  # 4: still pending or running
    if args.jobs_command == "stop":
        stopped = client.stop_job(job_id)
        print(f"job {job_id}: {'stop requested' if stopped else 'already finished'}")
        return wait(client, job_id) if args.wait else 0
    if args.follow:
        return follow(client, job_id, lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    sys.stdout.write(client.get_job_logs(job_id))
    return 0
