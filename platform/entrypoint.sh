#!/bin/sh
# Process roles of the Crucible image; the same commands run Crucible without Docker.
set -e
case "$1" in
  web)
    python manage.py migrate --noinput
    python manage.py collectstatic --noinput >/dev/null
    exec gunicorn crucible.wsgi:application --bind 0.0.0.0:8000 --workers "${WEB_WORKERS:-4}" --threads 4 --timeout 300
    ;;
  worker-cpu)
    exec celery -A crucible.celery_app worker -Q ingest,eval,default -c "${WORKER_CONCURRENCY:-2}" -n cpu@%h --loglevel INFO
    ;;
  worker-gpu)
    # One process per GPU, one task at a time; late acks so that a lost worker's run is redelivered.
    exec celery -A crucible.celery_app worker -Q train -c 1 --prefetch-multiplier 1 -n gpu@%h --loglevel INFO
    ;;
  beat)
    exec celery -A crucible.celery_app beat --loglevel INFO
    ;;
  *)
    exec "$@"
    ;;
esac
