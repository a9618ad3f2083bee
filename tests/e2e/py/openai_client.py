"""Calls a runq agent through the official `openai` Python package, unmodified.

Usage: python3 openai_client.py <base-url> <api-key> <agent>
Prints one JSON line: the sync answer, the streamed answer and its usage, the models listed,
and how the package reported an unknown model.
"""

import json
import sys

import openai


def main(base, key, agent):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)

    sync = client.chat.completions.with_raw_response.create(
        model=agent, messages=[{"role": "user", "content": "Hello from Python"}], temperature=0.2, max_tokens=64
    )
    completion = sync.parse()

    stream = client.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
        user="end-user-7",
    )
    streamed, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            streamed += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.model_dump()

    try:
        client.chat.completions.create(model="no-such-agent", messages=[{"role": "user", "content": "hi"}])
        missing = None
    except openai.NotFoundError as e:
        missing = {"status": e.status_code, "code": e.code, "type": e.type}

    print(
        json.dumps(
            {
                "sync": completion.choices[0].message.content,
                "sync_finish": completion.choices[0].finish_reason,
                "sync_usage": completion.usage.model_dump(),
                "sync_run_id": sync.headers.get("x-run-id"),
                "object": completion.object,
                "streamed": streamed,
                "stream_finish": finish,
                "stream_usage": usage,
                "models": [m.id for m in client.models.list()],
                "missing": missing,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
