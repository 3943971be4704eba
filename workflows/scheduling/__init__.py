"""The cron scheduler: pure cron decisions (`cron`), the loop (`loop`) and its launcher."""
