"""Whatever bytes arrive as a training file, the server answers 200 or 400 and keeps serving."""

from __future__ import annotations

import io
import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "robot", 3])},
    optional={"content": json_values, "weight": json_values, "tool_calls": json_values, "tool_call_id": json_values},
)
example_like = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(message_like, max_size=4)}, optional={"tools": json_values}),
    st.fixed_dictionaries({"prompt": json_values, "completion": json_values}),
    st.fixed_dictionaries({"input": json_values, "preferred_output": json_values,
                           "non_preferred_output": json_values}),
    json_values,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.lists(example_like, max_size=14).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
)


def test_arbitrary_uploads_get_200_or_400_and_the_server_keeps_serving(live_server):
    key = live_server.create_key("fuzz-org")
    headers = {"Authorization": f"Bearer {key}"}

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, purpose=st.sampled_from(["fine-tune", "fine-tune", "batch", "bogus"]))
    def upload(body: bytes, purpose: str) -> None:
        response = httpx.post(f"{live_server.base_url}/files", headers=headers, timeout=60,
                              files={"file": ("data.jsonl", io.BytesIO(body))}, data={"purpose": purpose})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json()["status"] in ("processed", "error")
        else:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    upload()
    assert httpx.get(live_server.base_url.removesuffix("/v1") + "/health").status_code == 200
    listed = httpx.get(f"{live_server.base_url}/files", headers=headers).json()
    assert listed["object"] == "list"  # everything stored is still listed and readable
    for item in listed["data"][:5]:
        assert httpx.get(f"{live_server.base_url}/files/{item['id']}/content", headers=headers).status_code == 200
