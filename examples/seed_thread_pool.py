from concurrent.futures import ThreadPoolExecutor
from nebula_sync import NebulaClient, SessionPoolConfig

with NebulaClient(
    hosts=["127.0.0.1:9669"],
    username="root",
    password="NebulaGraph01",
    session_pool_config=SessionPoolConfig(),  # enables multiple sessions per host
) as client, ThreadPoolExecutor(max_workers=8) as executor:
    futures = [
        executor.submit(client.execute_py, "RETURN {{idx}} AS idx", {"idx": x})
        for x in range(8)
    ]
    for f in futures:
        print(f.result().as_primitive_by_column())
