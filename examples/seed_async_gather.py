import asyncio
from nebula_sync import NebulaAsyncClient, SessionPoolConfig, ConnectionConfig, SessionConfig

async def concurrent_example():
    # Create client with session pool for concurrency
    async with await NebulaAsyncClient.connect(
        hosts=["127.0.0.1:9669", "127.0.0.1:9670"],  # Multiple hosts for HA
        username="root",
        password="NebulaGraph01",
        session_pool_config=SessionPoolConfig(
            size=3,           # Pool of 3 sessions per host
            wait_timeout=5.0  # Wait up to 5 seconds for available session
        ),
        conn_config=ConnectionConfig(
            connect_timeout=10.0,    # Connection timeout
            request_timeout=30.0,    # Query timeout
            ping_before_execute=True # Ping server before each query to ensure connection health
        ),
        session_config=SessionConfig()  # Default session settings
    ) as client:
        # Total concurrency: 2 hosts × 3 sessions = 6 concurrent queries
        
        # Execute multiple queries concurrently
        tasks = [
            client.execute_py("RETURN {{i}}", {"i": i}) 
            for i in range(6)
        ]
        
        results = await asyncio.gather(*tasks)
        
        for result in results:
            result.print()

# Run the example
asyncio.run(concurrent_example())
