from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("runs", views.RunViewSet, basename="run")
router.register("artifacts", views.ArtifactViewSet, basename="artifact")

urlpatterns = router.urls
