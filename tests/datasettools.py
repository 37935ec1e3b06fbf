"""Small fine-tuning datasets in every local format and record layout the SFT reader accepts."""

import json

CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "ok?"}, {"role": "assistant", "content": "ok"}]


def write_layout(kind: str, tmp_path):
    """(dataset path, finetune overrides) for one file format + record layout; 10 rows each."""
    import datasets
    import pyarrow as pa

    if kind == "jsonl-mapped":
        p = tmp_path / "qa.jsonl"
        p.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(10)))
        return p, {"prompt_field": "question", "response_field": "answer"}
    if kind == "json-array-messages":
        p = tmp_path / "chat.json"
        p.write_text(json.dumps([{"messages": CONV, "id": i} for i in range(10)]))
        return p, {"record_format": "messages"}
    if kind == "csv-alpaca-latin1":
        p = tmp_path / "alpaca.csv"
        rows = "".join(f"Traduis {i},café,réponse {i}\n" for i in range(10))
        p.write_bytes(("instruction,input,output\n" + rows).encode("latin-1"))
        return p, {"csv_encoding": "latin-1"}
    ds = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": f"q{i}"},
                                                        {"from": "gpt", "value": f"a{i}"}]} for i in range(10)])
    if kind == "parquet-sharegpt":
        p = tmp_path / "sg.parquet"
        ds.to_parquet(str(p))
        return p, {}
    if kind == "arrow-sharegpt":
        p = tmp_path / "sg.arrow"
        table = ds.data.table
        with pa.OSFile(str(p), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
            w.write_table(table)
        return p, {"record_format": "sharegpt"}
    if kind == "saved-dataset":
        p = tmp_path / "saved"
        datasets.Dataset.from_list([{"prompt": f"p{i}", "response": f"r{i}"} for i in range(10)]).save_to_disk(str(p))
        return p, {}
    if kind == "saved-datasetdict":
        p = tmp_path / "saved-dict"
        rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(10)]
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:8]),
                              "validation": datasets.Dataset.from_list(rows[8:])}).save_to_disk(str(p))
        return p, {}
    raise AssertionError(kind)


LAYOUTS = ["jsonl-mapped", "json-array-messages", "csv-alpaca-latin1", "parquet-sharegpt", "arrow-sharegpt",
           "saved-dataset", "saved-datasetdict"]
