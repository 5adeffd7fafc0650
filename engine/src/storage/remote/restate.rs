//! A layer that rewrites the errors of the service under it: ssh's
//! failed starts on SFTP (remote/ssh.rs) and TLS failures on S3 and WebDAV
//! (remote/tls.rs). It sits under the retry layer, so what it marks
//! temporary is retried and what it marks final is not.

use opendal::raw::{
    oio, Layer, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir, RpPresign,
    RpRead, RpRename, RpStat, Service, ServiceInfo, Servicer,
};
use opendal::{Buffer, BytesRange, Capability, Error, Metadata, OperationContext, Result};

/// The layer: every error of `inner` goes through the function it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Restate(pub fn(Error) -> Error);

impl Layer for Restate {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        std::sync::Arc::new(RestateService { inner, restate: self.0 })
    }
}

#[derive(Debug)]
pub(super) struct RestateService {
    inner: Servicer,
    restate: fn(Error) -> Error,
}

/// A reader, writer, lister or deleter whose errors are restated: SFTP
/// connects lazily, inside them, at their first request, and an HTTP
/// request is sent from inside them.
pub(super) struct Restated<R>(R, fn(Error) -> Error);

impl Service for RestateService {
    type Reader = Restated<oio::Reader>;
    type Writer = Restated<oio::Writer>;
    type Lister = Restated<oio::Lister>;
    type Deleter = Restated<oio::Deleter>;
    // arc never copies or composes on a remote store: passed on as they are.
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(&self, ctx: &OperationContext, path: &str, args: OpCreateDir) -> Result<RpCreateDir> {
        self.inner.create_dir(ctx, path, args).await.map_err(self.restate)
    }

    async fn stat(&self, ctx: &OperationContext, path: &str, args: OpStat) -> Result<RpStat> {
        self.inner.stat(ctx, path, args).await.map_err(self.restate)
    }

    fn read(&self, ctx: &OperationContext, path: &str, args: OpRead) -> Result<Self::Reader> {
        self.inner.read(ctx, path, args).map(|r| Restated(r, self.restate)).map_err(self.restate)
    }

    fn write(&self, ctx: &OperationContext, path: &str, args: OpWrite) -> Result<Self::Writer> {
        self.inner.write(ctx, path, args).map(|r| Restated(r, self.restate)).map_err(self.restate)
    }

    fn delete(&self, ctx: &OperationContext) -> Result<Self::Deleter> {
        self.inner.delete(ctx).map(|r| Restated(r, self.restate)).map_err(self.restate)
    }

    fn list(&self, ctx: &OperationContext, path: &str, args: OpList) -> Result<Self::Lister> {
        self.inner.list(ctx, path, args).map(|r| Restated(r, self.restate)).map_err(self.restate)
    }

    fn copy(&self, ctx: &OperationContext, from: &str, to: &str, args: opendal::raw::OpCopy) -> Result<Self::Copier> {
        self.inner.copy(ctx, from, to, args)
    }

    fn compose(&self, ctx: &OperationContext, to: &str, args: opendal::raw::OpCompose) -> Result<Self::Composer> {
        self.inner.compose(ctx, to, args)
    }

    async fn rename(&self, ctx: &OperationContext, from: &str, to: &str, args: OpRename) -> Result<RpRename> {
        self.inner.rename(ctx, from, to, args).await.map_err(self.restate)
    }

    async fn presign(&self, ctx: &OperationContext, path: &str, args: OpPresign) -> Result<RpPresign> {
        self.inner.presign(ctx, path, args).await
    }
}

impl<R: oio::ReadStream> oio::ReadStream for Restated<R> {
    async fn read(&mut self) -> Result<Buffer> {
        self.0.read().await.map_err(self.1)
    }
}

impl<R: oio::Read> oio::Read for Restated<R> {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let (rp, stream) = self.0.open(range).await.map_err(self.1)?;
        Ok((rp, Box::new(Restated(stream, self.1)) as Box<dyn oio::ReadStreamDyn>))
    }

    async fn read(&self, range: BytesRange) -> Result<(RpRead, Buffer)> {
        self.0.read(range).await.map_err(self.1)
    }
}

impl<W: oio::Write> oio::Write for Restated<W> {
    async fn write(&mut self, bs: Buffer) -> Result<()> {
        self.0.write(bs).await.map_err(self.1)
    }

    async fn copy_from(&mut self, path: &str, args: OpRead, range: BytesRange) -> Result<()> {
        self.0.copy_from(path, args, range).await.map_err(self.1)
    }

    async fn close(&mut self) -> Result<Metadata> {
        self.0.close().await.map_err(self.1)
    }

    async fn abort(&mut self) -> Result<()> {
        self.0.abort().await.map_err(self.1)
    }
}

impl<L: oio::List> oio::List for Restated<L> {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        self.0.next().await.map_err(self.1)
    }
}

impl<D: oio::Delete> oio::Delete for Restated<D> {
    async fn delete(&mut self, path: &str, args: OpDelete) -> Result<()> {
        self.0.delete(path, args).await.map_err(self.1)
    }

    async fn close(&mut self) -> Result<()> {
        self.0.close().await.map_err(self.1)
    }
}
