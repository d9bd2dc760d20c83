"""Reads volley-mock's /v1/messages with the official `anthropic` SDK, plain and streamed.

Run by tests/anthropic.rs with ANTHROPIC_BASE_URL (no /v1) and ANTHROPIC_API_KEY set.
"""

import anthropic

client = anthropic.Anthropic(max_retries=0, timeout=30)
params = dict(model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])

message = client.messages.create(**params)
assert message.type == "message" and message.role == "assistant", message
assert message.content[0].type == "text" and message.content[0].text, message
assert message.usage.output_tokens == 16 and message.usage.input_tokens > 0, message.usage
assert message.stop_reason == "end_turn", message.stop_reason
assert message._request_id and message._request_id.startswith("req_"), message._request_id

text = ""
with client.messages.stream(**params) as stream:
    for piece in stream.text_stream:
        text += piece
    final = stream.get_final_message()
assert text == message.content[0].text, (text, message.content[0].text)
assert final.usage.output_tokens == 16, final.usage
assert final.stop_reason == "end_turn", final.stop_reason

events = [event.type for event in client.messages.create(stream=True, **params)]
assert events[0] == "message_start" and events[-1] == "message_stop", events
assert "content_block_delta" in events and "message_delta" in events, events

try:
    client.messages.create(model="claude-test", messages=params["messages"], max_tokens=64,
                           extra_headers={"x-mock-fault": "503"})
    raise AssertionError("expected an overloaded error")
except anthropic.InternalServerError as e:
    assert e.status_code == 529, e.status_code
    assert isinstance(e, anthropic.OverloadedError), type(e)

print("sdk ok", anthropic.__version__)
