#!/usr/bin/env python3
"""Ask the model on Replicate a question, with the replicate library: the whole answer, or streamed as it comes.

    export REPLICATE_API_TOKEN=r8_...            # https://replicate.com/account/api-tokens
    python client.py OWNER/MODEL:VERSION "¿Qué es el aprendizaje automático?" --temperature 0
    python client.py OWNER/MODEL:VERSION "Explica qué es un transformer." --stream
    python client.py --deployment OWNER/NAME "¿Cuál es la capital de Francia?"

It needs only Python 3 and `pip install replicate`: copy this one file anywhere. Inputs left out take the
model's defaults. REPLICATE_BASE_URL, read by the replicate library, points it at another API address.
Exit status: 0 answered, 1 the prediction or the API failed, 2 bad arguments or no token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TOKEN_URL = "https://replicate.com/account/api-tokens"

# Every input of predict.py's run() except `pregunta` (the positional argument), with its JSON type;
# a test fails when this table and predict.py disagree.
INPUTS: dict[str, tuple[type, str]] = {
    "system_prompt": (str, "instructions that frame the answer (the system turn)"),
    "prompt_template": (str, "your own format, with {pregunta} and optionally {system_prompt}"),
    "messages": (str, 'earlier turns as JSON: [{"role": "user", "content": "..."}, {"role": "assistant", ...}]'),
    "max_new_tokens": (int, "most tokens to generate (1-4096; default 128)"),
    "min_new_tokens": (int, "fewest tokens before end-of-text is allowed (0-4096; default 0)"),
    "temperature": (float, "0 = greedy; below 1 less random, above 1 more (0-2; default 0.7)"),
    "top_p": (float, "nucleus sampling; 1 = off (0.01-1; default 0.9)"),
    "top_k": (int, "draw from the k most likely tokens; 0 = off (0-1000; default 50)"),
    "repetition_penalty": (float, "1 = none, above 1 = fewer repeats (1-2; default 1.15)"),
    "stop_sequences": (str, r"comma-separated texts that end the answer; \n for a newline, \, for a comma"),
    "seed": (int, "sampling seed (0-4294967295; default random)"),
    "json_schema": (str, 'a JSON Schema the answer must follow, e.g. \'{"type": "object"}\'; empty = free text'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Ask the model on Replicate a question: replicate.run() for the whole answer, "
        "replicate.stream() with --stream.",
        epilog=f"REPLICATE_API_TOKEN must be set: create a token at {TOKEN_URL}.",
    )
    parser.add_argument(
        "target",
        metavar="OWNER/MODEL[:VERSION]",
        help="the model and version (a model you pushed needs its version), or OWNER/NAME with --deployment",
    )
    parser.add_argument("pregunta", help="the question")
    parser.add_argument("--deployment", action="store_true", help="the target is a deployment, OWNER/NAME")
    parser.add_argument("--stream", action="store_true", help="print the answer token by token, as it is generated")
    for name, (kind, help_text) in INPUTS.items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        parser.add_argument(*flags, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=help_text)
    return parser


def model_input(args: argparse.Namespace) -> dict:
    """The prediction's input: pregunta and every flag that was given (the model fills in the rest)."""
    given = {name: getattr(args, name) for name in INPUTS if getattr(args, name) is not None}
    return {"pregunta": args.pregunta, **given}


def _check_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    owner, slash, rest = args.target.partition("/")
    name, colon, version = rest.partition(":")
    if not owner or not slash or not name or "/" in name or (colon and (not version or args.deployment)):
        expected = "OWNER/NAME" if args.deployment else "OWNER/MODEL or OWNER/MODEL:VERSION"
        parser.error(f"target {args.target!r}: expected {expected}")


def _event_error(data: str) -> str:
    """The message of a stream's error event: Replicate sends JSON with a `detail`, else plain text."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return data
    return str(parsed.get("detail") or parsed) if isinstance(parsed, dict) else data


def _print_stream(events) -> None:
    from replicate.stream import ServerSentEvent

    for event in events:
        if event.event == ServerSentEvent.EventType.OUTPUT:
            # str(): the library turns a chunk that starts with "https:" into a FileOutput; str() gives the text.
            print(str(event.data), end="", flush=True)
        elif event.event == ServerSentEvent.EventType.DONE:
            try:
                reason = json.loads(event.data).get("reason")  # {} on success, else {"reason": "canceled"}
            except (ValueError, AttributeError):
                reason = None
            if reason:
                raise RuntimeError(f"the prediction ended early: {reason}")
    print()


def _print_answer(output) -> None:
    # The output is the list of chunks (an iterator); a plain string is printed as it is.
    print(output if isinstance(output, str) else "".join(str(chunk) for chunk in output))


def _ask_deployment(client, args: argparse.Namespace) -> None:
    from replicate.exceptions import ModelError

    if args.stream:
        prediction = client.deployments.predictions.create(args.target, input=model_input(args), stream=True)
        _print_stream(prediction.stream())
        return
    prediction = client.deployments.predictions.create(args.target, input=model_input(args), wait=True)
    prediction.wait()
    if prediction.status != "succeeded":
        raise ModelError(prediction)
    _print_answer(prediction.output or [])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_target(parser, args)
    token = os.environ.get("REPLICATE_API_TOKEN")
    if not token:
        print(
            f"error: REPLICATE_API_TOKEN is not set. Create a token at {TOKEN_URL}, then "
            "`export REPLICATE_API_TOKEN=r8_...` and run this again.",
            file=sys.stderr,
        )
        return 2
    try:
        import httpx  # installed with replicate, which sends its requests through it
        import replicate
        from replicate.exceptions import ModelError, ReplicateError
    except ImportError:
        print("error: the replicate library is missing: `pip install replicate`.", file=sys.stderr)
        return 2

    client = replicate.Client(api_token=token)
    try:
        if args.deployment:
            _ask_deployment(client, args)
        elif args.stream:
            _print_stream(client.stream(args.target, input=model_input(args)))
        else:
            _print_answer(client.run(args.target, input=model_input(args)))
    except ModelError as e:
        # The model's own message, e.g. "E1007 MinAboveMax: min_new_tokens: ... Lower min_new_tokens ...".
        prediction = e.prediction
        reason = prediction.error or "no error message"
        print(f"\nerror: prediction {prediction.id} {prediction.status}: {reason}", file=sys.stderr)
        return 1
    except ReplicateError as e:
        what = " ".join(str(part) for part in (e.status, e.title, e.detail) if part) or e.type
        print(f"\nerror: Replicate API: {what}", file=sys.stderr)
        if e.status == 401:
            print(f"The token was refused: check REPLICATE_API_TOKEN ({TOKEN_URL}).", file=sys.stderr)
        elif e.status == 404 and ":" not in args.target and not args.deployment:
            print("A model you pushed yourself is run by version: OWNER/MODEL:VERSION.", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"\nerror: could not reach the Replicate API: {e!r}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # the stream's error event, or a cancel
        print(f"\nerror: {_event_error(str(e))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
